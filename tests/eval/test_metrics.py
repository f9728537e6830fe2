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


def test_box_mask_floors_the_start_ceils_the_end_and_clips():
    from glimpse.errors import GlimpseError
    from glimpse.eval import box_mask

    expected = np.zeros((3, 4), dtype=bool)
    expected[0:2, 0:3] = True  # x 0.5..2.1 -> columns 0..2, y -1..1.2 -> rows 0..1 (clipped at the top)
    assert np.array_equal(box_mask([0.5, -1, 2.1, 1.2], 3, 4), expected)
    assert box_mask((-5, -5, 50, 50), 3, 4).all()
    for outside in [(5, 0, 9, 3), (-9, -9, -1, -1), (2, 2, 1, 3)]:  # right of it, above-left of it, inverted
        with pytest.raises(GlimpseError, match=r"the box \[.*\] covers no pixel of the 4x3 image"):
            box_mask(outside, 3, 4)


def test_grounding_metrics_take_a_box_mask(explanation):
    from glimpse.eval import box_mask

    scores = np.zeros(16, dtype=np.float32)
    scores[5] = 1.0  # the cell x 42..56, y 14..28 of the original, as in the pointing game test
    explanation.visual = scores
    assert pointing_game(explanation, box_mask([45.5, 20, 50, 24.2], 56, 112))
    assert not pointing_game(explanation, box_mask([57, 14, 70, 28], 56, 112))
    explanation.visual = np.ones(16, dtype=np.float32)
    assert energy_in_mask(explanation, box_mask([-10, -10, 56, 70], 56, 112)) == pytest.approx(0.5, abs=0.02)


def test_kl_div_and_sim_golden_values():
    from glimpse.eval import kl_div, sim

    # uniform saliency (1/4 each) against h = (1/2, 0, 0, 1/2): 2 * 1/2 * log(1/2 / 1/4) = log 2
    assert kl_div(np.ones((2, 2)), np.eye(2)) == pytest.approx(np.log(2))
    # -1, 1, 1, 3 shifted by its minimum: 0, 2, 2, 4 -> 0, 1/4, 1/4, 1/2, the human map's own distribution
    assert kl_div(np.array([[-1.0, 1.0], [1.0, 3.0]]), np.array([[0.0, 1.0], [1.0, 2.0]])) == pytest.approx(0, abs=1e-12)
    # all the human mass where the saliency is 0: 1 * log(EPS + 1 / EPS), which pins EPS to 2.2204e-16
    assert kl_div(np.array([[0.0, 1.0], [1.0, 2.0]]), np.array([[1, 0], [0, 0]])) == pytest.approx(
        np.log(2.2204e-16 + 1 / 2.2204e-16), rel=1e-12)
    # a zero map counts as uniform: the same as the first case
    assert kl_div(np.zeros((2, 2)), np.eye(2)) == pytest.approx(np.log(2))
    saliency = np.array([[0.0, 1.0], [2.0, 3.0]])
    # (0, 1, 2, 3) / 6 against (3, 2, 1, 0) / 6: min per pixel (0, 1, 1, 0) / 6 = 1/3
    assert sim(saliency, saliency[::-1, ::-1]) == pytest.approx(1 / 3)
    # MIT's shift by the minimum: 1, 2, 3, 4 becomes 0, 1, 2, 3, the same distribution as the human map
    # (pysaliency, which does not shift non-negative maps, gives 0 + 1/6 + 3/10 + 4/10 = 13/15)
    assert sim(saliency + 1, saliency) == pytest.approx(1.0)
    assert sim(np.full((2, 2), 5.0), saliency) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_div_and_sim_match_pysaliency(seed):
    """kl_div against pysaliency.metrics.MIT_KLDiv (on maps with negative values, and a zero map: the same
    shift by the minimum and uniform fallback); sim against pysaliency.metrics.SIM on maps whose minimum is 0,
    where MIT's shift by the minimum and pysaliency's shift of negative maps only agree."""
    from glimpse.eval import kl_div, sim

    metrics = pysaliency_metrics()
    rng = np.random.default_rng(seed)
    human = rng.random((20, 30)) ** 4
    human[rng.random((20, 30)) < 0.3] = 0
    with np.errstate(divide="ignore"):  # pysaliency takes the log of the human map's zeros
        for saliency in [rng.normal(size=(20, 30)), rng.random((20, 30)), np.zeros((20, 30))]:
            assert kl_div(saliency, human) == pytest.approx(float(metrics.MIT_KLDiv(saliency, human)), rel=1e-9)
    saliency = rng.random((20, 30)) ** 2
    saliency[3, 4] = 0
    assert sim(saliency, human) == pytest.approx(float(metrics.SIM(saliency, human)), rel=1e-9)


def test_auc_judd_golden_values():
    from glimpse.eval import auc_judd

    saliency = np.array([[0.0, 1.0], [2.0, 3.0]])
    # fixated 1 and 3, unfixated 0 and 2: thresholds 3 -> (fp 0, tp 1/2), 1 -> (fp 1/2, tp 1);
    # area of (0, 0) (0, 1/2) (1/2, 1) (1, 1) = 1/2 * 3/4 + 1/2 * 1 = 7/8
    assert auc_judd(saliency, np.array([[0, 1], [0, 1]])) == pytest.approx(7 / 8)
    assert auc_judd(saliency, np.array([[0, 2], [0, 5]])) == pytest.approx(7 / 8)  # a pixel counts once
    # one fixated pixel tied with two unfixated ones at 1, one unfixated at 0: MIT's jitter lets 0, 1 or 2 of
    # the tied ones through the threshold (fp 0, 1/3, 2/3 with tp 1): areas 1, 5/6, 2/3, mean 5/6
    # (pysaliency's general_roc without jitter lets both through: 2/3)
    assert auc_judd(np.array([[1.0, 1.0], [1.0, 0.0]]), np.array([[1, 0], [0, 0]])) == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_judd_matches_pysaliency(seed, monkeypatch):
    """auc_judd against pysaliency.roc.general_roc(fixated, unfixated, judd=1), the ROC behind pysaliency's
    AUC_Judd: equal on maps without ties; on a map with ties, equal to general_roc's mean over MIT's 1e-7
    jitter (pysaliency's AUC_Judd jitters too), and above general_roc without jitter."""
    from glimpse.eval import auc_judd

    pysaliency_metrics()
    from pysaliency.roc import general_roc

    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # pysaliency 0.2.22 calls it; numpy 2.4 removed it
    rng = np.random.default_rng(seed)
    fixations = np.zeros((20, 30), dtype=bool)
    fixations.flat[rng.choice(600, size=15, replace=False)] = True
    saliency = rng.random((20, 30))
    assert auc_judd(saliency, fixations) == pytest.approx(general_roc(saliency[fixations], saliency[~fixations], judd=1)[0],
                                                          rel=1e-9)
    saliency = np.round(saliency * 4) / 4  # five levels: many ties between fixated and other pixels
    jittered = [saliency + rng.random(saliency.shape) * 1e-7 for _ in range(300)]
    mean = np.mean([general_roc(j[fixations], j[~fixations], judd=1)[0] for j in jittered])
    assert auc_judd(saliency, fixations) == pytest.approx(mean, abs=0.005)
    assert auc_judd(saliency, fixations) > general_roc(saliency[fixations], saliency[~fixations], judd=1)[0] + 0.005


def test_auc_borji_golden_values():
    from glimpse.eval import auc_borji

    # one fixated pixel (0.95) against one pixel drawn from 0, 0.91, 0.95, 1: AUC 1, 1/2 (0.91 falls in the same
    # 0.1 band), 1/2 (itself), 0; mean 1/2 (without the 0.1 bands it would be 5/8)
    saliency, fixations = np.array([[0.0, 0.91], [0.95, 1.0]]), np.array([[0, 0], [1, 0]])
    assert auc_borji(saliency, fixations, splits=4000) == pytest.approx(0.5, abs=0.025)
    assert auc_borji(saliency, fixations, splits=1) in (0.0, 0.5, 1.0)
    assert auc_borji(saliency, fixations, splits=20, seed=3) == auc_borji(saliency, fixations, splits=20, seed=3)
    assert auc_borji(saliency, fixations, splits=20, seed=3) != auc_borji(saliency, fixations, splits=20, seed=4)
    # rescaling by the range: the same map times 10 plus 7 scores the same
    assert auc_borji(saliency * 10 + 7, fixations, seed=5) == auc_borji(saliency, fixations, seed=5)
    assert auc_borji(np.full((3, 3), 2.0), np.eye(3)) == 0.5  # every draw ties


def test_auc_borji_matches_pysaliency_in_expectation():
    """auc_borji against pysaliency.roc.general_rocs_per_positive(fixated, all pixels), whose mean is pysaliency's
    AUC with uniform nonfixations: the expectation of AUC-Borji over its draws, on a map whose values lie on
    MIT's 0.1 thresholds (between 0 and 1), where the bands separate every distinct value."""
    from glimpse.eval import auc_borji

    pysaliency_metrics()
    from pysaliency.roc import general_rocs_per_positive

    rng = np.random.default_rng(0)
    saliency = rng.integers(0, 11, size=(20, 30)) / 10
    saliency[0, :2] = 0.0, 1.0
    fixations = np.zeros((20, 30), dtype=bool)
    fixations.flat[rng.choice(600, size=15, replace=False)] = True
    expected = float(np.mean(general_rocs_per_positive(saliency[fixations], saliency.ravel())))
    assert auc_borji(saliency, fixations, splits=2000) == pytest.approx(expected, abs=0.01)


def test_shuffled_auc_golden_values():
    from glimpse.eval import shuffled_auc

    saliency = np.array([[0.0, 1.0], [2.0, 3.0]])
    fixations = np.array([[0, 1], [0, 1]])  # values 1 and 3
    # against 0 and 2: of the pairs (1, 0) (1, 2) (3, 0) (3, 2), three rank the fixation higher: 3/4
    assert shuffled_auc(saliency, fixations, np.array([[1, 0], [1, 0]])) == pytest.approx(3 / 4)
    # against 1 (also fixated here) and 2: 1/2 for the tie (1, 1), 0, 1, 1: 5/8
    assert shuffled_auc(saliency, fixations, np.array([[0, 4], [1, 0]])) == pytest.approx(5 / 8)


@pytest.mark.parametrize("seed", [0, 1])
def test_shuffled_auc_matches_pysaliency(seed):
    """shuffled_auc against the mean of pysaliency.roc.general_rocs_per_positive(fixated, other images' fixated),
    pysaliency's per-fixation sAUC, on a map with ties (both count a tie half) and count maps (each pixel once)."""
    from glimpse.eval import shuffled_auc

    pysaliency_metrics()
    from pysaliency.roc import general_rocs_per_positive

    rng = np.random.default_rng(seed)
    saliency = np.round(rng.random((20, 30)) * 6) / 6
    counts, other = np.zeros((20, 30)), np.zeros((20, 30))
    np.add.at(counts, (rng.integers(0, 20, 15), rng.integers(0, 30, 15)), 1)
    np.add.at(other, (rng.integers(0, 20, 40), rng.integers(0, 30, 40)), 1)
    expected = float(np.mean(general_rocs_per_positive(saliency[counts > 0], saliency[other > 0])))
    assert shuffled_auc(saliency, counts, other) == pytest.approx(expected, rel=1e-9)


def test_fixations_from_map_keeps_the_top_share_with_ties():
    from glimpse.eval import fixations_from_map

    human = np.array([[0.1, 0.5], [0.5, 0.9]])
    assert np.array_equal(fixations_from_map(human, top=0.25), [[False, False], [False, True]])
    assert np.array_equal(fixations_from_map(human, top=0.5), [[False, True], [True, True]])  # the tie at 0.5 joins
    assert fixations_from_map(human, top=0.01).sum() == 1 and fixations_from_map(human, top=1).all()
    # default 10%: the 10 highest of 0..99
    assert np.array_equal(np.nonzero(fixations_from_map(np.arange(100.0).reshape(10, 10)).ravel())[0], np.arange(90, 100))
    # zeros never count, even when the quota reaches them
    assert np.array_equal(fixations_from_map(np.array([[0.0, 0.0], [0.0, 2.0]]), top=0.5), [[False, False], [False, True]])


@pytest.mark.parametrize("top", [0, -0.1, 1.5, float("nan")])
def test_fixations_from_map_refuses_a_share_outside_0_1(top):
    from glimpse.errors import GlimpseError
    from glimpse.eval import fixations_from_map

    with pytest.raises(GlimpseError, match=r"top is the share of pixels .* in \(0, 1\]"):
        fixations_from_map(np.ones((4, 4)), top=top)


def test_new_fixation_metrics_refuse_maps_of_other_shapes_or_without_fixations():
    from glimpse.errors import GlimpseError
    from glimpse.eval import auc_borji, auc_judd, fixations_from_map, kl_div, shuffled_auc, sim

    saliency, fixations = np.zeros((5, 6)), np.eye(5, 6)
    wrong = [lambda m: kl_div(saliency, m), lambda m: sim(saliency, m), lambda m: auc_judd(saliency, m),
             lambda m: auc_borji(saliency, m), lambda m: shuffled_auc(saliency, m, fixations),
             lambda m: shuffled_auc(saliency, fixations, m)]
    for metric in wrong:
        with pytest.raises(GlimpseError, match="the human map is 5x6 .* the saliency map 6x5"):
            metric(np.ones((6, 5)))
        with pytest.raises(GlimpseError, match="at least one fixation"):
            metric(np.zeros((5, 6)))
    with pytest.raises(GlimpseError, match="at least one fixation"):
        fixations_from_map(np.zeros((5, 6)))
    with pytest.raises(GlimpseError, match="needs at least one pixel without fixations"):
        auc_judd(saliency, np.ones((5, 6)))
    with pytest.raises(GlimpseError, match="at least one split"):
        auc_borji(saliency, fixations, splits=0)


def test_prompt_word_correlations_match_scipy():
    from scipy import stats as scipy_stats

    from glimpse.eval import prompt_cc, prompt_spearman

    rng = np.random.default_rng(3)
    scores, gaze = rng.normal(size=9), rng.integers(0, 4, 9).astype(float)  # gaze with ties
    assert prompt_cc(scores, gaze) == pytest.approx(scipy_stats.pearsonr(scores, gaze).statistic)
    assert prompt_spearman(scores, gaze) == pytest.approx(scipy_stats.spearmanr(scores, gaze).statistic)
    assert prompt_spearman([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]) == pytest.approx(0.5)
    assert prompt_cc([1.0, 2.0], [5.0, 5.0]) == 0.0 == prompt_spearman([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])


def test_prompt_word_correlations_refuse_gaze_on_other_words():
    from glimpse.errors import GlimpseError
    from glimpse.eval import prompt_cc

    with pytest.raises(GlimpseError, match="3 word score.* against gaze on 2 word"):
        prompt_cc(np.ones(3), np.ones(2))
    with pytest.raises(GlimpseError, match="at least two words"):
        prompt_cc(np.ones(1), np.ones(1))
