"""The result object: exact save/load, maps on the original image, PNG and standalone HTML."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

import glimpse
from glimpse import Explanation, maps
from tiny_models import build_tiny_llava, rand_image

QUESTION = "what color is the object?"


@pytest.fixture(scope="module")
def explanation(tiny_llava):
    model, processor = tiny_llava
    return glimpse.explain(model, processor, rand_image(90, 60, seed=3), QUESTION, answer=" a red circle")


def test_save_load_round_trip_is_exact(explanation, tmp_path):
    explanation.save(tmp_path / "e")
    loaded = Explanation.load(tmp_path / "e")
    for name, value in vars(explanation).items():
        other = getattr(loaded, name)
        if isinstance(value, np.ndarray):
            assert value.dtype == other.dtype and np.array_equal(value, other), name
        elif name == "images":
            assert [np.asarray(a).tolist() == np.asarray(b).tolist() for a, b in zip(value, other)] == [True]
        else:
            assert value == other, name
    assert {p.name for p in (tmp_path / "e").iterdir()} == {
        "explanation.json", "arrays.safetensors", "image_0.png", "overlay.png", "report.html"}


def test_load_rejects_a_folder_without_explanation(tmp_path):
    with pytest.raises(glimpse.GlimpseError, match="no explanation.json"):
        Explanation.load(tmp_path)


def test_fields_and_shapes(explanation):
    T = len(explanation.answer_token_ids)
    assert explanation.answer_tokens == [" a", " red", " circle"] and T == 3
    assert explanation.token_visual.shape == (T, 16) and explanation.visual.shape == (16,)
    assert explanation.token_prompt.shape[0] == T and explanation.alpha.shape == (T, 2)
    assert explanation.visual_map(resolution="grid").shape == (4, 4)
    assert explanation.visual_map().shape == (60, 90)
    assert explanation.visual_map(token=1).shape == (60, 90)
    assert explanation.prompt_words == QUESTION.split()
    assert np.isclose(explanation.prompt_word_scores.sum(), explanation.prompt.sum(), rtol=1e-5)
    assert explanation.method == "glimpse" and explanation.version == glimpse.__version__
    with pytest.raises(glimpse.GlimpseError):
        explanation.visual_map(image=1)


def ramp(width, height, axis):
    values = np.linspace(0, 255, width if axis == "x" else height)
    grid = np.tile(values, (height, 1)) if axis == "x" else np.tile(values[:, None], (1, width))
    return Image.fromarray(np.repeat(grid[..., None], 3, axis=2).astype(np.uint8))


@pytest.mark.parametrize("crop,axis,expected_box,interior", [
    # resize 60 -> 56 high, centre-crop 56 of 112 wide: columns 30..90 seen, cell centres 37.5..82.5
    (True, "x", (30.0, 0.0, 90.0, 60.0), np.s_[:, 38:83]),
    # pad 120x60 to 120x120, resize to 56: cells of 30 px, centres inside the image at rows 15 and 45
    (False, "y", (0.0, -30.0, 120.0, 90.0), np.s_[15:46, :]),
])
def test_map_lands_on_the_original_pixels(crop, axis, expected_box, interior):
    """Ground truth from the processor itself: feed each token the mean of ITS processed patch of a
    ramp image; laid back on the original image, the map must reproduce the ramp between the
    centres of cells that lie inside the image (beyond them, bilinear blends in padding)."""
    model, processor = build_tiny_llava(seed=0, crop=crop)
    image = ramp(120, 60, axis)
    result = glimpse.explain(model, processor, image, QUESTION, answer=" a red")
    tile = result.layouts[0].tiles[0]
    assert tile.box == pytest.approx(expected_box, abs=0.5)
    pixels = processor(images=image, text="<image>", return_tensors="pt")["pixel_values"][0, 0]
    patch = pixels.shape[-1] // tile.cols
    ip = processor.image_processor
    intensity = (pixels * ip.image_std[0] + ip.image_mean[0]) * 255  # undo the normalisation
    means = torch.nn.functional.avg_pool2d(intensity[None, None], patch)[0, 0].flatten().numpy()
    result.visual = means.astype(np.float32)
    mapped = result.visual_map()
    seen = maps.coverage(result.layouts[0])
    original = np.asarray(image, dtype=np.float64)[..., 0]
    # Absolute agreement (a stretched or shifted map would still correlate with a ramp).
    assert np.abs(mapped[interior] - original[interior]).mean() < 3.0
    if crop:  # only the centre-cropped columns were seen
        assert seen[:, 31:89].all() and not seen[:, :29].any() and not seen[:, 91:].any()
    else:  # padding adds nothing outside the image: every original pixel was seen
        assert seen.all()
    picture = result.to_png()
    assert picture.size == image.size  # drawn on the original image, not stretched to a square


def test_png_and_html_are_standalone(explanation, tmp_path):
    picture = explanation.to_png(tmp_path / "o.png", token=0)
    assert (tmp_path / "o.png").is_file() and picture.size == (90, 60)
    html = explanation.to_html(tmp_path / "r.html")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html
    # holistic + one picture per answer token, all embedded
    assert html.count("data:image/jpeg;base64,") == 1 + 1 + len(explanation.answer_tokens)
    for token in explanation.answer_tokens:
        assert token.strip() in html
    for word in explanation.prompt_words:
        assert word in html
    assert "<!DOCTYPE" not in explanation._repr_html_()


def test_figure_for_a_paper(explanation, tmp_path):
    fig = explanation.figure(top=2)
    assert len(fig.axes) == 2 + 2
    fig.savefig(tmp_path / "fig.pdf")
    fig.savefig(tmp_path / "fig.png", dpi=80)
    assert (tmp_path / "fig.pdf").stat().st_size > 1000
    assert len(explanation.figure(tokens=[0]).axes) == 3
