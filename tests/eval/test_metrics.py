"""Localisation metrics on explanations whose maps are set by hand."""

import numpy as np
import pytest

import glimpse
from glimpse.eval import energy_in_mask, pointing_game
from tiny_models import rand_image


@pytest.fixture(scope="module")
def explanation(tiny_llava):
    model, processor = tiny_llava
    # 112 x 56 image: resized to 112 x 56 -> crop 56 x 56 centred: box x 28..84 at full height 56
    return glimpse.explain(model, processor, rand_image(112, 56), "what color is the object?", answer=" a red")


def test_pointing_game_uses_the_best_token_cell(explanation):
    scores = np.zeros(16, dtype=np.float32)
    scores[5] = 1.0  # row 1, col 1 of the 4x4 grid: x 42..56, y 14..28 of the original
    explanation.visual = scores
    mask = np.zeros((56, 112), dtype=bool)
    mask[20, 50] = True
    assert pointing_game(explanation, mask)
    mask[:] = False
    mask[20, 60] = True  # the neighbouring cell
    assert not pointing_game(explanation, mask)


def test_energy_in_mask(explanation):
    scores = np.zeros(16, dtype=np.float32)
    scores[:] = 1.0
    explanation.visual = scores
    mask = np.zeros((56, 112), dtype=bool)
    mask[:, :56] = True  # left half of the original image: half of the seen (cropped) region
    assert energy_in_mask(explanation, mask) == pytest.approx(0.5, abs=0.02)
    assert energy_in_mask(explanation, np.ones_like(mask)) == pytest.approx(1.0)


def test_pointing_chance_counts_cells_touching_the_mask(explanation):
    from glimpse.eval import pointing_chance

    mask = np.zeros((56, 112), dtype=bool)
    mask[0:14, 28:42] = True  # exactly cell (0, 0) of the crop
    assert pointing_chance(explanation.layouts[0], mask) == pytest.approx(1 / 16)
