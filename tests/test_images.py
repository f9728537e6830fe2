"""Image input: every mode becomes RGB, EXIF rotation is applied, bad files give ImageError."""

import warnings

import numpy as np
import pytest
from PIL import Image

from glimpse import ImageError
from glimpse.images import load_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "I;16", "CMYK"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    picture = base.convert(mode) if mode != "I;16" else base.convert("L").convert("I;16")
    path = tmp_path / ("x.tiff" if mode in ("I;16", "CMYK") else "x.png")
    picture.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (30, 20)
    assert [str(w.message)[:21] for w in caught] == (["a I;16 image was conv"] if mode == "I;16" else [])


def test_rgba_transparency_is_composited_on_white(tmp_path):
    picture = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(picture).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied(tmp_path):
    picture = Image.new("RGB", (40, 20), (0, 0, 0))
    picture.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    picture.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (20, 40)
    assert np.asarray(loaded)[:10, :, 0].mean() > 200 and np.asarray(loaded)[-10:, :, 0].mean() < 50


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("hello")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)


def test_truncated_image(tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ImageError):
        load_image(path)


def test_a_decompression_bomb_is_an_image_error_before_any_pixel_is_decoded(tmp_path):
    from bad_inputs import png_bomb

    bomb = tmp_path / "bomb.png"
    png_bomb(bomb)
    assert bomb.stat().st_size < 100
    with pytest.raises(ImageError, match="bomb.png declares more pixels than is safe to decode"):
        load_image(bomb)


@pytest.mark.parametrize("mode, values", [("I;16", np.array([[1000, 3000], [5000, 9000]], np.uint16)),
                                          ("F", np.array([[0.1, 0.2], [0.3, 0.5]], np.float32))])
def test_wide_grey_images_are_scaled_by_their_range_with_a_warning(tmp_path, mode, values):
    from glimpse import GlimpseWarning

    picture = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values, mode="F")
    assert picture.mode == mode
    with pytest.warns(GlimpseWarning, match=f"a {mode} image was converted to 8-bit RGB by its range"):
        rgb = load_image(picture)
    grey = np.asarray(rgb)[..., 0].astype(float)
    expected = (values - values.min()) / (values.max() - values.min()) * 255
    np.testing.assert_allclose(grey, expected.round(), atol=1)
    assert rgb.mode == "RGB" and grey.max() == 255 and grey.min() == 0


def test_arrays_are_images_and_other_objects_are_refused():
    array = np.zeros((4, 6, 3), np.uint8)
    array[0, 0] = 255
    assert load_image(array).size == (6, 4) and load_image(array).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((4, 6), 0.5)).getpixel((1, 1)) == (128, 128, 128)
    for bad, message in ((np.zeros((4, 6, 2), np.uint8), "shape"), (np.full((2, 2), 3.0), "floats in"),
                         (np.zeros((0, 3), np.uint8), "shape"), (None, "got NoneType"), (42, "got int")):
        with pytest.raises(ImageError, match=message):
            load_image(bad)


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    import glimpse.images

    monkeypatch.setattr(glimpse.images, "MAX_PIXELS", 100)
    Image.new("RGB", (11, 10)).save(tmp_path / "big.png")
    for source, name in ((tmp_path / "big.png", "big.png"), (Image.new("RGB", (11, 10)), "the image"),
                         (np.zeros((10, 11, 3), np.uint8), "the image array")):
        with pytest.raises(ImageError, match=f"{name} has 11 x 10 pixels, more than glimpse takes .*MAX_PIXELS"):
            load_image(source)
    assert load_image(Image.new("RGB", (10, 10))).size == (10, 10)


def test_a_multi_frame_image_is_explained_by_its_first_frame_with_a_warning(tmp_path):
    from glimpse import GlimpseWarning

    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(GlimpseWarning, match="moving.gif has 2 frames; the first is explained"):
        picture = load_image(tmp_path / "moving.gif")
    assert picture.getpixel((0, 0))[0] > 200


def test_torch_tensors_are_images_channels_first_or_last():
    import torch

    chw = torch.zeros(3, 4, 6)
    chw[0] = 1.0  # red, floats in [0, 1] as torchvision gives them
    assert load_image(chw).size == (6, 4) and load_image(chw).getpixel((0, 0)) == (255, 0, 0)
    hwc = torch.full((4, 6, 3), 128, dtype=torch.uint8)
    assert load_image(hwc).getpixel((5, 3)) == (128, 128, 128)
    assert load_image(torch.ones(1, 4, 6)).getpixel((0, 0)) == (255, 255, 255)  # one channel: grey
    with pytest.raises(ImageError, match="floats in"):
        load_image(torch.full((3, 4, 6), 2.0))
