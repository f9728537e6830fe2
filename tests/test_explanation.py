"""The result object: exact save/load, maps on the original image, PNG and standalone HTML."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from safetensors.numpy import load_file

import glimpse
from glimpse import Explanation, maps
from glimpse.render import COLORMAP, LEGEND_WIDTH, overlay
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
        elif name == "details":
            assert value.keys() == other.keys() == {"alpha", "head_weights", "beta_prompt", "gamma"}
            assert all(np.array_equal(value[k], other[k]) for k in value)
        elif name == "images":
            assert [np.asarray(a).tolist() == np.asarray(b).tolist() for a, b in zip(value, other)] == [True]
        else:
            assert value == other, name
    assert {p.name for p in (tmp_path / "e").iterdir()} == {
        "explanation.json", "arrays.safetensors", "image_0.png", "overlay.png", "tokens.png", "report.html"}


def test_load_rejects_a_folder_without_explanation(tmp_path):
    with pytest.raises(glimpse.GlimpseError, match="no explanation.json"):
        Explanation.load(tmp_path)


def test_fields_and_shapes(explanation):
    T = len(explanation.answer_token_ids)
    assert explanation.answer_tokens == [" a", " red", " circle"] and T == 3
    assert explanation.token_visual.shape == (T, 16) and explanation.visual.shape == (16,)
    assert explanation.token_prompt.shape[0] == T and explanation.details["alpha"].shape == (T, 2)
    assert explanation.token_weights.shape == explanation.probs.shape == explanation.ranking.shape == (T,)
    assert explanation.details["head_weights"].shape == (T, 2, 4) and explanation.explained == "logit"
    assert explanation.visual_map(resolution="grid").shape == (4, 4)
    assert explanation.visual_map().shape == (60, 90)
    assert explanation.visual_map(token=1).shape == (60, 90)
    assert explanation.prompt_words == ["what", "color", "is", "the", "object"]  # labels without punctuation
    assert np.isclose(explanation.prompt_word_scores.sum(), explanation.prompt.sum(), rtol=1e-5)
    assert explanation.method == "glimpse" and explanation.version == glimpse.__version__
    with pytest.raises(glimpse.GlimpseError):
        explanation.visual_map(image=1)
    for bad in (3, -1, True, 1.0):
        with pytest.raises(glimpse.GlimpseError, match="answer token .* out of range: this answer has 3 token"):
            explanation.visual_map(token=bad)
    with pytest.raises(glimpse.GlimpseError, match="out of range"):
        explanation.figure(tokens=[5])


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
    assert overlay(result).size == image.size  # drawn on the original image, not stretched to a square
    if crop:  # the unseen columns are hatched: grey lines over the darkened image
        picture = np.asarray(overlay(result), dtype=np.float32)
        assert (picture[:, :29] == 153).all(axis=-1).any() and (picture[:, 31:89] != 153).any(axis=-1).all()


def test_the_png_has_a_colour_bar_beneath_the_map(explanation):
    picture = explanation.to_png()
    drawn = overlay(explanation).resize((LEGEND_WIDTH, LEGEND_WIDTH * 60 // 90), Image.BILINEAR)  # enlarged
    assert picture.width == LEGEND_WIDTH and picture.height > drawn.height
    np.testing.assert_array_equal(np.asarray(picture)[:drawn.height], np.asarray(drawn))
    strip = np.asarray(picture, dtype=np.float32)[drawn.height:]
    ramp = colormaps[COLORMAP](np.linspace(0, 1, 100))[:, :3] * 255
    bar = strip[(np.abs(strip - strip[..., :1]).sum(-1) > 30).any(1)][0]  # the first coloured row: the bar
    coloured = bar[(np.abs(bar - bar[:, :1]).sum(-1) > 30)]
    assert len(coloured) > LEGEND_WIDTH * 0.8
    assert all(np.abs(ramp - colour).sum(-1).min() < 12 for colour in coloured[::20])  # the colormap's colours
    assert not (strip == 255).all()  # the range's labels


def test_a_cropped_image_has_a_note_under_its_colour_bar(explanation):
    cropped = glimpse.explain(*build_tiny_llava(seed=0, crop=True), rand_image(120, 60), QUESTION, answer=" a red")
    whole = glimpse.explain(*build_tiny_llava(seed=0, crop=False), rand_image(120, 60), QUESTION, answer=" a red")
    assert cropped.to_png().height > whole.to_png().height  # one more line: what the hatching means


def test_png_and_html_are_standalone(explanation, tmp_path):
    picture = explanation.to_png(tmp_path / "o.png", token=0)
    assert (tmp_path / "o.png").is_file() and Image.open(tmp_path / "o.png").size == picture.size
    html = explanation.to_html(tmp_path / "r.html")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html
    # the image, the holistic map layer shown, and the script's layers: the whole answer's, each token's
    assert html.count("data:image/jpeg;base64,") == 1 + 1 + 1 + len(explanation.answer_tokens)
    for token in explanation.answer_tokens:
        assert token.strip() in html
    for word in explanation.prompt_words:
        assert word in html
    assert "<!DOCTYPE" not in explanation._repr_html_()


def test_report_shows_a_method_section_only_where_the_method_has_one(tiny_llava):
    model, processor = tiny_llava
    image = rand_image(90, 60, seed=3)
    reports = {name: glimpse.explain(model, processor, image, QUESTION, answer=" a red circle", method=name).to_html()
               for name in ("glimpse", "raw_attention", "tam")}
    assert ">gamma</th>" in reports["glimpse"] and ">beta_prompt</th>" in reports["glimpse"]
    assert "glimpse values" in reports["glimpse"] and "head_weights" in reports["glimpse"]
    assert ">weight</th>" in reports["glimpse"] and ">rank score</th>" not in reports["glimpse"]
    for name in ("raw_attention", "tam"):  # equal token weights (a mean over tokens) are no column
        for word in ("gamma", "beta", "alpha", "head_weights", "raw_attention values", ">weight</th>"):
            assert word not in reports[name]
        assert ">rank score</th>" in reports[name]
    assert ">interference_scale</th>" in reports["tam"] and "tam values" in reports["tam"]
    assert "attention pattern" in reports["raw_attention"] and "raw logits" in reports["glimpse"]


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name,method", [("glimpse", "glimpse"), ("raw-attention", "raw_attention")])
def test_version_1_folders_written_by_the_first_release_still_load(name, method, tmp_path):
    folder = FIXTURES / f"explanation-v1-{name}"
    assert json.loads((folder / "explanation.json").read_text())["schema_version"] == 1
    stored = load_file(str(folder / "arrays.safetensors"))
    old = Explanation.load(folder)
    assert old.method == method and old.answer_tokens == [" a", " red", " circle"]
    for core in ("token_visual", "visual", "token_prompt", "prompt", "probs"):
        np.testing.assert_array_equal(getattr(old, core), stored[core])
    np.testing.assert_array_equal(old.token_weights, stored["beta_visual"])
    if method == "glimpse":
        assert set(old.details) == {"alpha", "beta_prompt", "gamma"} and old.explained == "logit"
        np.testing.assert_array_equal(old.ranking, stored["gamma"])
    else:  # a baseline's beta_prompt and gamma were invented in version 1: dropped
        assert old.details == {} and old.explained == "attention"
    assert "schema version 1" in old.notes[0]
    assert old.visual_map().shape == (30, 40) and "<table>" in old.to_html()
    old.save(tmp_path / "v2")
    again = Explanation.load(tmp_path / "v2")
    assert json.loads((tmp_path / "v2" / "explanation.json").read_text())["schema_version"] == 2
    np.testing.assert_array_equal(again.ranking, old.ranking)
    assert again.details.keys() == old.details.keys() and again.notes == old.notes


def test_a_damaged_folder_is_one_clear_error(explanation, tmp_path):
    explanation.save(tmp_path / "e", figures=False)
    doc = json.loads((tmp_path / "e" / "explanation.json").read_text())
    del doc["answer_tokens"]
    (tmp_path / "e" / "explanation.json").write_text(json.dumps(doc))
    with pytest.raises(glimpse.GlimpseError, match="damaged explanation"):
        Explanation.load(tmp_path / "e")
    doc["schema_version"] = 3
    (tmp_path / "e" / "explanation.json").write_text(json.dumps(doc))
    with pytest.raises(glimpse.GlimpseError, match="schema version 1 to 2"):
        Explanation.load(tmp_path / "e")


def test_every_saved_file_takes_the_same_permissions(explanation, tmp_path):
    folder = explanation.save(tmp_path / "saved")
    modes = {path.name: path.stat().st_mode & 0o777 for path in folder.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_pictures_of_a_large_image_are_bounded_to_a_screen(explanation):
    from dataclasses import replace

    from glimpse.render import DISPLAY_SIDE, displayed_map, overlay

    big = explanation.images[0].resize((6000, 3000))
    layout = explanation.layouts[0]
    scale = 6000 / layout.width, 3000 / layout.height
    tiles = tuple(replace(t, box=(t.box[0] * scale[0], t.box[1] * scale[1], t.box[2] * scale[0], t.box[3] * scale[1]))
                  for t in layout.tiles)
    large = replace(explanation, images=[big], layouts=[replace(layout, width=6000, height=3000, tiles=tiles)])
    picture = overlay(large)
    assert picture.size == (DISPLAY_SIDE, DISPLAY_SIDE // 2)
    values, seen = displayed_map(large)
    assert values.shape == (DISPLAY_SIDE // 2, DISPLAY_SIDE) and seen.shape == values.shape
    small, _ = displayed_map(explanation)
    np.testing.assert_allclose(small, explanation.visual_map(0), rtol=1e-6)  # an image that fits is drawn as it is
    assert values.max() == pytest.approx(small.max(), rel=0.05) and values.min() == pytest.approx(small.min(), abs=1e-3)


def test_a_saved_document_is_strict_json_even_with_non_finite_numbers(explanation, tmp_path):
    from dataclasses import replace

    odd = replace(explanation, cost={**explanation.cost, "seconds": float("nan")},
                  extra={"score": float("inf"), "values": [1.0, float("-inf")]})
    folder = odd.save(tmp_path / "odd", figures=False)

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    doc = json.loads((folder / "explanation.json").read_text(), parse_constant=refuse)
    assert doc["cost"]["seconds"] is None and doc["extra"] == {"score": None, "values": [1.0, None]}
