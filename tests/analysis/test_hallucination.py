"""Grounding scores, the hallucination report, and the toy validation's AUROC."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

import glimpse
from glimpse.analysis.hallucination import concentration, grounding, write_hallucination_report
from glimpse.eval.stats import auroc, bootstrap_auroc
from glimpse.toy import world
from glimpse.toy.hallucination import questions, validate


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


def test_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(0.5, 1, 40).round(1), rng.normal(0, 1, 30).round(1)  # with ties
    expected = scipy_stats.mannwhitneyu(positives, negatives).statistic / (40 * 30)
    assert auroc(positives, negatives) == pytest.approx(expected)
    assert auroc([2.0, 3.0], [1.0]) == 1.0 and auroc([1.0], [1.0]) == 0.5
    estimate = bootstrap_auroc(positives, negatives)
    assert estimate.low < estimate.mean < estimate.high and estimate.n == 70


def test_concentration_golden_values():
    assert concentration(np.array([4.0, 1.0, 0.0, -3.0] + [0.0] * 6), region=0.1) == pytest.approx(0.8)
    assert concentration(np.ones(10), region=0.2) == pytest.approx(0.2)
    assert concentration(np.zeros(5)) == 0.0


def test_grounding_scores_each_token_against_the_answers_mean(shipped, tmp_path):
    sample = world.make_sample(11)
    explanation = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question)
    result = grounding(explanation, threshold=0.9)
    relevance = explanation.token_visual.mean(1)
    np.testing.assert_allclose([r["relative_relevance"] for r in result["tokens"]], relevance / relevance.mean(),
                               rtol=1e-5)
    assert [r["flagged"] for r in result["tokens"]] == list(relevance / relevance.mean() < 0.9)
    page, data = write_hallucination_report(explanation, tmp_path, threshold=0.9)
    assert json.loads(data.read_text())["tokens"] == json.loads(json.dumps(result["tokens"]))
    text = page.read_text()
    assert text.count('alt="map of token') == len(explanation.answer_tokens)
    assert text.count("weakly grounded</b>") == sum(r["flagged"] for r in result["tokens"])


def test_the_toy_validation_pairs_present_and_absent_shapes(shipped):
    pairs = questions(6, 5)
    assert len(pairs) % 2 == 0 and [g for _, _, g in pairs] == [True, False] * (len(pairs) // 2)
    for (image, asked, _), (same, absent, _) in zip(pairs[::2], pairs[1::2]):
        assert same is image and asked != absent
    result = validate(shipped.model, shipped.processor, 3, 5)
    assert result["grounded"] + result["hallucinated"] + result["no_colour_named"] == len(questions(3, 5))
    assert 0 <= result["low"] <= result["auroc"] <= result["high"] <= 1
