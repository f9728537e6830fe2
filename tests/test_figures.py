"""Publication figures: layout against a reference picture, PNG/PDF/SVG, colour maps and normalisation.

The figures are drawn from a stored explanation of the shipped toy model (tests/fixtures/figure-explanation:
`glimpse.explain(*glimpse.load(None, device="cpu"), scene.image, scene.question).save(folder, figures=False)`
for `scene = glimpse.toy.world.make_sample(0)`), so they depend on no model's numerics. After an intended
change of the layout, regenerate the reference picture with `python tests/test_figures.py` and look at it.
"""

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib import style
from matplotlib.text import Text
from PIL import Image

import glimpse
from glimpse import Explanation, maps
from glimpse.figures import normalisation_label

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "figure_reference.png"
DPI = 50
# The pictures are compared in 8 x 8 pixel blocks, where the glyph-level differences between matplotlib and
# FreeType versions average out. Measured on the reference (mean absolute difference, 0-255 scale): text
# hinting off or unforced 0.7, text without antialiasing 0.73, a serif font 0.39, nearest-neighbour image
# resampling 0.53; against a missing colour bar 2.1, a missing text block 2.1, a missing map 14 to 32,
# another colour map 11 (a missing question line, 1.1, passes: text is checked by the tests below).
TOLERANCE, BLOCK = 1.5, 8


@pytest.fixture(scope="module")
def explanation():
    return Explanation.load(FIXTURES / "figure-explanation")


def picture(explanation: Explanation, **options) -> Image.Image:
    """The figure as an RGB picture at DPI, with matplotlib's default style (not the user's matplotlibrc)."""
    with style.context("default"):
        buffer = io.BytesIO()
        explanation.figure(**options).savefig(buffer, format="png", dpi=DPI)
    return Image.open(buffer).convert("RGB")


def blocks(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((image.width // BLOCK, image.height // BLOCK), Image.BOX), dtype=np.float32)


def test_the_layout_matches_the_reference_picture(explanation):
    drawn = picture(explanation)
    with Image.open(REFERENCE) as stored:
        reference = stored.convert("RGB")
    assert drawn.size == reference.size
    assert np.abs(blocks(drawn) - blocks(reference)).mean() < TOLERANCE
    # The comparison sees a layout change: the same figure without its filmstrip's last map.
    fewer = picture(explanation, tokens=explanation.top_tokens(3)[:2])
    assert fewer.size == reference.size and np.abs(blocks(fewer) - blocks(reference)).mean() > 5 * TOLERANCE


def test_pdf_svg_and_png(explanation, tmp_path):
    fig = explanation.figure(normalisation="percentile")
    for name in ("fig.pdf", "fig.svg", "fig.png"):
        fig.savefig(tmp_path / name)
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    assert "<svg" in (tmp_path / "fig.svg").read_text(encoding="utf-8")
    with Image.open(tmp_path / "fig.png") as png:
        assert png.size == tuple(round(v) for v in fig.get_size_inches() * fig.dpi)


def texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_text()]


@pytest.mark.parametrize("options,label", [
    ({}, "min-max normalised"),
    ({"normalisation": "percentile"}, "clipped at the 99th percentile"),
    ({"normalisation": "percentile", "percentile": 92}, "clipped at the 92nd percentile"),
    ({"normalisation": "percentile", "percentile": 99.5}, "clipped at the 99.5th percentile"),
])
def test_the_normalisation_is_written_on_the_figure(explanation, options, label):
    assert label in [t.get_text() for t in texts(explanation.figure(**options))]


def test_ordinals():
    ordinals = [normalisation_label("percentile", p).split()[3] for p in (1, 2, 3, 11, 12, 13, 21, 100)]
    assert ordinals == ["1st", "2nd", "3rd", "11th", "12th", "13th", "21st", "100th"]


def test_panels_filmstrip_and_shaded_answer(explanation):
    fig = explanation.figure()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["image", "whole answer"] and len(fig.axes) == 3 + 3
    assert [title.rsplit("(token ", 1)[1] for title in titles[3:]] == [f"{t})" for t in explanation.top_tokens(3)]
    assert len(explanation.figure(filmstrip=False).axes) == 3
    assert fig.axes[3].get_title() == "there (token 0)"
    assert explanation.figure(tokens=[1]).axes[3].get_title().endswith("(token 1)")
    n = len(explanation.answer_tokens)
    question, answer = fig.texts[:-n - 1], fig.texts[-n:]  # the question's words, "Answer:", its tokens
    assert [t.get_text() for t in question] == ["Question:"] + explanation.prompt_words
    assert [t.get_text() for t in answer] == [token.strip() for token in explanation.answer_tokens]
    # Shaded by weight: the heavier the token, the darker its background.
    darkness = [1 - np.mean(t.get_bbox_patch().get_facecolor()[:3]) for t in answer]
    assert np.argsort(darkness).tolist() == np.argsort(explanation.token_weights).tolist()


def test_percentile_clipping_differs_from_min_max_on_an_outlier(explanation):
    values = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    values[0, 0] = 1000
    minmax, clipped = maps.normalise(values), maps.normalise(values, normalisation="percentile", percentile=95)
    assert np.median(minmax) < 0.001 and 0.4 < np.median(clipped) < 0.6 and (clipped == 1).sum() == 5
    np.testing.assert_array_equal(maps.normalise(values, percentile=95), minmax)  # min-max ignores `percentile`
    np.testing.assert_allclose(maps.normalise(values, normalisation="percentile", percentile=100), minmax)
    spiked = dataclasses.replace(explanation, visual=explanation.visual.copy())
    spiked.visual[0] = 50 * spiked.visual.max()
    holistic = [spiked.figure(normalisation=n).axes[1].images[0].get_array() for n in ("minmax", "percentile")]
    assert np.abs(holistic[0].astype(int) - holistic[1].astype(int)).mean() > 2


@pytest.mark.parametrize("options,message", [
    ({"colormap": "no-such-map"}, "unknown colormap 'no-such-map'"),
    ({"normalisation": "zscore"}, "normalisation must be one of 'minmax', 'percentile', got 'zscore'"),
    ({"normalisation": "percentile", "percentile": 0}, r"percentile must be in \(0, 100\], got 0"),
    ({"percentile": 101}, r"percentile must be in \(0, 100\], got 101"),
    ({"tokens": [5]}, "answer token 5 out of range"),
    ({"image": 1}, "image index 1 out of range"),
])
def test_bad_options_are_one_clear_error(explanation, options, message):
    with pytest.raises(glimpse.GlimpseError, match=message):
        explanation.figure(**options)


def test_other_colour_maps(explanation):
    jet, viridis = (explanation.figure(colormap=c, filmstrip=False) for c in ("jet", "viridis"))
    assert viridis.axes[2].collections[0].get_cmap().name == "viridis"
    assert not np.array_equal(jet.axes[1].images[0].get_array(), viridis.axes[1].images[0].get_array())


def test_figures_leave_pyplot_and_the_backend_alone(explanation):
    import matplotlib
    from matplotlib import pyplot as plt

    backend, open_figures = matplotlib.get_backend(), plt.get_fignums()
    for _ in range(3):
        explanation.figure(top=1)
    assert plt.get_fignums() == open_figures and matplotlib.get_backend() == backend


if __name__ == "__main__":
    picture(Explanation.load(FIXTURES / "figure-explanation")).save(REFERENCE)
    print(f"wrote {REFERENCE}")
