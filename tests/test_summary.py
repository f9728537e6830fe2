"""An explanation in words and at a glance: peaks, the weightiest tokens, the filmstrip tokens.png."""

import numpy as np
import pytest
from PIL import Image

import glimpse
from glimpse.render import overlay
from glimpse.summary import FILM_SIDE, GAP, filmstrip, peak, place, summary, weightiest
from tiny_models import rand_image


@pytest.fixture(scope="module")
def explanation(tiny_llava):
    model, processor = tiny_llava
    return glimpse.explain(model, processor, rand_image(96, 64, seed=2), "what color is the object?",
                           answer=" a red circle on the left")


def test_the_peak_is_the_maps_highest_pixel_in_the_original_image(explanation):
    for token in (None, 0, 2):
        x, y = peak(explanation, 0, token)
        full = explanation.visual_map(0, token)  # (height, width) over the original image
        assert full.shape == (64, 96)
        assert full[y, x] == pytest.approx(full.max(), rel=0.02)


@pytest.mark.parametrize("x, y, words", [(0, 0, "top left"), (50, 40, "centre"), (99, 99, "bottom right"),
                                         (10, 50, "middle left"), (50, 5, "top centre")])
def test_places_are_ninths_of_the_picture(x, y, words):
    assert place(x, y, 100, 100) == words


def test_the_weightiest_tokens_come_heaviest_first(explanation):
    order = weightiest(explanation, 3)
    weights = explanation.token_weights
    assert len(order) == 3 and list(weights[order]) == sorted(weights, reverse=True)[:3]


def test_the_summary_names_the_peaks_and_the_weightiest_tokens(explanation):
    lines = summary(explanation)
    assert lines[0] == "question: what color is the object?" and lines[1] == "answer:   a red circle on the left  (given)"
    x, y = peak(explanation)
    assert lines[3] == f"whole-answer map peaks at x={x}, y={y} ({place(x, y, 96, 64)})"
    heaviest = weightiest(explanation, 1)[0]
    assert f"{explanation.answer_tokens[heaviest].strip()!r} weight {explanation.token_weights[heaviest]:.2f}" in lines[4]


def test_the_filmstrip_has_each_tokens_map_in_answer_order(explanation):
    sheet = filmstrip(explanation, columns=4)
    count = len(explanation.answer_tokens)
    assert count == 6
    step = FILM_SIDE + GAP
    assert sheet.width == 4 * step - GAP and sheet.height % 2 == 0 and sheet.height > 2 * FILM_SIDE
    label = (sheet.height // 2) - FILM_SIDE
    for t in range(count):
        picture = overlay(explanation, 0, t, side=FILM_SIDE)
        picture.thumbnail((FILM_SIDE, FILM_SIDE))
        left = (t % 4) * step + (FILM_SIDE - picture.width) // 2
        top = (t // 4) * (FILM_SIDE + label) + label + (FILM_SIDE - picture.height) // 2
        cell = sheet.crop((left, top, left + picture.width, top + picture.height))
        np.testing.assert_array_equal(np.asarray(cell), np.asarray(picture))
    labels = np.asarray(sheet.crop((0, 0, 4 * step - GAP, label)).convert("L"))
    assert labels.min() < 100  # text is written above each map
    blank = sheet.crop((2 * step, FILM_SIDE + label, sheet.width, sheet.height))  # no 7th and 8th token
    assert np.asarray(blank).min() == 255


def test_an_explanation_saves_its_filmstrip_as_tokens_png(explanation, tmp_path):
    explanation.save(tmp_path / "e")
    saved = Image.open(tmp_path / "e" / "tokens.png")
    np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(filmstrip(explanation)))
