"""The evaluation table: per-method estimates, paired tests, and the files it writes."""

import json

import numpy as np
import pytest

from glimpse.errors import GlimpseError
from glimpse.eval.evaluate import evaluate, summarise
from glimpse.eval.stats import bootstrap_mean, paired_bootstrap


def rows(method, pointing, energy, failed=()):
    return [{"id": f"i{k:02d}", "method": method, "status": "failed" if k in failed else "done",
             "pointing_game": None if k in failed else p, "energy_in_mask": None if k in failed else e,
             "correct": True, "nss": None}
            for k, (p, e) in enumerate(zip(pointing, energy))]


def test_summarise_estimates_each_metric_and_tests_against_the_reference():
    rng = np.random.default_rng(0)
    energy_a, energy_b = rng.random(30), rng.random(30) * 0.5
    table = rows("a", [True] * 30, energy_a) + rows("b", [k % 2 == 0 for k in range(30)], energy_b, failed=(3,))
    report = summarise(table, ["a", "b"])
    a, b = report.rows
    assert (a.done, a.failed, b.done, b.failed) == (30, 0, 29, 1)
    assert a.estimates["energy_in_mask"] == bootstrap_mean(energy_a) and "nss" not in a.estimates
    assert b.estimates["pointing_game"].mean == pytest.approx(15 / 29)
    kept = np.arange(30) != 3
    expected = paired_bootstrap(np.where(kept, energy_b, np.nan), energy_a)
    assert b.p_values["energy_in_mask"] == expected and not a.p_values
    markdown = report.markdown()
    assert "| b | 29 (1 failed) |" in markdown and "paired bootstrap" in markdown and "NSS" not in markdown
    assert report.csv().splitlines()[0].startswith("method,done,failed,correct_mean,correct_low")
    with pytest.raises(GlimpseError, match="reference method 'c'"):
        summarise(table, ["a", "b"], reference="c")


def test_evaluate_on_toy_scenes_writes_the_three_files_and_resumes(tmp_path):
    from glimpse.toy.scenes import write_scenes

    items = write_scenes(tmp_path / "data", 3, 9)
    report = evaluate(items, tmp_path / "eval", methods=["glimpse", "rollout"], max_answer_tokens=2)
    assert [row.method for row in report.rows] == ["glimpse", "rollout"]
    assert set(report.rows[0].estimates) >= {"correct", "pointing_game", "energy_in_mask"}
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["reference"] == "glimpse" and saved["rows"][1]["p_values"].keys() >= {"energy_in_mask"}
    assert (tmp_path / "eval" / "evaluation.md").read_text() == report.markdown()
    again = evaluate(items, tmp_path / "eval", methods=["glimpse", "rollout"], max_answer_tokens=2)
    assert again.markdown() == report.markdown()  # every item was skipped: the same records, the same table


def test_faithfulness_scores_are_kept_per_item_and_read_back(tmp_path):
    import glimpse
    from glimpse.batch import load_explanation
    from glimpse.eval.faithfulness import faithfulness_curve
    from glimpse.toy.scenes import write_scenes

    items = write_scenes(tmp_path / "data", 2, 9)
    options = {"baseline": "mean", "step": 0.5, "random_orders": 1}
    report = evaluate(items, tmp_path / "eval", methods=["glimpse"], faithfulness=options, max_answer_tokens=2)
    estimate = report.rows[0].estimates["deletion_auc"]
    loaded = glimpse.load(None, device="cpu")
    aucs = [faithfulness_curve(loaded.model, loaded.processor, load_explanation(tmp_path / "eval" / "batch", f"scene-{i}",
                                                                               "glimpse"), "deletion", **options).auc
            for i in range(2)]
    assert estimate.n == 2 and estimate.mean == pytest.approx(np.mean(aucs), abs=1e-5)
    assert len(list((tmp_path / "eval" / "faithfulness").glob("*/glimpse.json"))) == 2
    again = evaluate(items, tmp_path / "eval", methods=["glimpse"], faithfulness=options, max_answer_tokens=2)
    assert again.rows[0].estimates["insertion_auc"] == report.rows[0].estimates["insertion_auc"]
