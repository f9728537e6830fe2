"""Deletion and insertion curves on the shipped shapes-world model."""

import numpy as np
import pytest
from PIL import Image

import glimpse
from glimpse.errors import GlimpseError
from glimpse.eval.faithfulness import _perturbed, area, baseline_image, faithfulness_curve
from glimpse.eval.metrics import token_cells
from glimpse.toy import world


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


@pytest.fixture(scope="module")
def explained(shipped):
    sample = world.make_dataset(1, 11)[0]
    return sample, glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question)


def test_curves_start_and_end_at_the_clean_and_the_baseline_image(shipped, explained):
    _, explanation = explained
    clean = float(np.log(explanation.probs.astype(np.float64)).sum())
    deletion = faithfulness_curve(*shipped, explanation, "deletion", baseline="mean", step=0.25, random_orders=2)
    insertion = faithfulness_curve(*shipped, explanation, "insertion", baseline="mean", step=0.25, random_orders=2)
    np.testing.assert_allclose(deletion.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    for curve in (deletion.scores, deletion.random):
        assert curve[0] == pytest.approx(clean, abs=1e-4)
    for curve in (insertion.scores, insertion.random):
        assert curve[-1] == pytest.approx(clean, abs=1e-4)
        assert curve[0] == pytest.approx(deletion.scores[-1], abs=1e-4)  # both: the whole image replaced
    assert deletion.auc == pytest.approx(area(deletion.scores, deletion.fractions))
    assert area(np.array([1.0, 3.0, 3.0]), np.array([0.0, 0.5, 1.0])) == pytest.approx(2.5)


def test_batching_and_a_tokens_own_curve(shipped, explained):
    _, explanation = explained
    one = faithfulness_curve(*shipped, explanation, step=0.5, random_orders=1, batch_size=1)
    many = faithfulness_curve(*shipped, explanation, step=0.5, random_orders=1, batch_size=6)
    np.testing.assert_allclose(one.scores, many.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.random, many.random, rtol=1e-4, atol=1e-5)
    token = faithfulness_curve(*shipped, explanation, token=1, step=0.5, random_orders=0)
    assert token.scores[0] == pytest.approx(float(np.log(explanation.probs[1])), abs=1e-4)
    assert np.isnan(token.random).all() and np.isnan(token.random_auc)


def test_deleting_the_evidence_first_hurts_more_than_deleting_the_background_first(shipped):
    """The order is what the curve measures: a map on the asked-about object (from the scene's mask)
    against its inverse, on scenes where the model is right."""
    gaps = []
    for sample in world.make_dataset(4, 3):
        explanation = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question, answer=sample.answer)
        cover = np.array([sample.mask[t:b, l:r].mean() for t, l, b, r in token_cells(explanation.layouts[0])])
        aucs = []
        for scores in (cover, -cover):
            explanation.visual = scores.astype(np.float32)
            aucs.append(faithfulness_curve(*shipped, explanation, baseline="mean", step=0.2, random_orders=0).auc)
        gaps.append(aucs[1] - aucs[0])
    assert np.mean(gaps) > 0 and sum(g > 0 for g in gaps) >= 3


def test_perturbed_images_and_baselines():
    picture = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
    background = baseline_image(picture, "mean")
    assert np.asarray(background).std(axis=(0, 1)).max() == 0
    removed = np.asarray(_perturbed(picture, background, [(0, 0, 2, 3)], "deletion"))
    np.testing.assert_array_equal(removed[:2, :3], np.asarray(background)[:2, :3])
    np.testing.assert_array_equal(removed[2:], np.asarray(picture)[2:])
    revealed = np.asarray(_perturbed(picture, background, [(0, 0, 2, 3)], "insertion"))
    np.testing.assert_array_equal(revealed[:2, :3], np.asarray(picture)[:2, :3])
    np.testing.assert_array_equal(revealed[2:], np.asarray(background)[2:])
    blurred = np.asarray(baseline_image(picture, "blur", blur=0.5), dtype=float)
    assert blurred.std() < np.asarray(picture, dtype=float).std()


@pytest.mark.parametrize("options, message", [({"kind": "both"}, "kind must be"), ({"step": 0}, "step must be"),
                                              ({"baseline": "noise"}, "baseline must be")])
def test_bad_options_are_refused(shipped, explained, options, message):
    _, explanation = explained
    with pytest.raises(GlimpseError, match=message):
        faithfulness_curve(*shipped, explanation, **options)
