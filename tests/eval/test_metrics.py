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


def pysaliency_metrics():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its pkg_resources import warns on recent setuptools
        import pysaliency.metrics
    return pysaliency.metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nss_and_cc_match_pysaliency(seed):
    from glimpse.eval import cc, nss

    metrics = pysaliency_metrics()
    rng = np.random.default_rng(seed)
    saliency = rng.random((56, 112)) ** 3
    xs, ys = rng.integers(0, 112, size=12), rng.integers(0, 56, size=12)
    xs, ys = np.concatenate([xs, xs[:4]]), np.concatenate([ys, ys[:4]])  # four pixels fixated twice
    counts = np.zeros((56, 112))
    np.add.at(counts, (ys, xs), 1)
    assert nss(saliency, counts) == pytest.approx(float(np.mean(metrics.NSS(saliency, xs, ys))), rel=1e-9)
    assert nss(saliency, counts > 0) == pytest.approx(
        float(np.mean(metrics.NSS(saliency, *np.nonzero(counts.T)))), rel=1e-9)
    density = rng.random((56, 112))
    assert cc(saliency, density) == pytest.approx(float(metrics.CC(saliency, density)), rel=1e-9)


def test_nss_and_cc_golden_values():
    from glimpse.eval import cc, nss

    saliency = np.array([[0.0, 1.0], [2.0, 3.0]])  # mean 1.5, std sqrt(1.25)
    assert nss(saliency, np.array([[0, 0], [0, 1]])) == pytest.approx(1.5 / np.sqrt(1.25))
    assert nss(saliency, np.array([[1, 0], [0, 3]])) == pytest.approx((-1.5 + 3 * 1.5) / 4 / np.sqrt(1.25))
    assert cc(saliency, np.array([[0.0, 2.0], [4.0, 6.0]])) == pytest.approx(1.0)
    assert cc(saliency, np.array([[3.0, 2.0], [1.0, 0.0]])) == pytest.approx(-1.0)


def test_fixation_metrics_refuse_maps_of_other_shapes_or_without_fixations():
    from glimpse.errors import GlimpseError
    from glimpse.eval import cc, nss

    with pytest.raises(GlimpseError, match="the human map is 10x5 .* the saliency map 112x56"):
        nss(np.zeros((56, 112)), np.ones((5, 10)))
    with pytest.raises(GlimpseError, match="at least one fixation"):
        cc(np.ones((56, 112)), np.zeros((56, 112)))
    assert nss(np.ones((4, 4)), np.eye(4)) == 0.0 and cc(np.eye(4), np.ones((4, 4))) == 0.0
