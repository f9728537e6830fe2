"""The faithfulness report of one explanation: its curves are faithfulness_curve's, its page shows every token."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import glimpse
from glimpse.analysis.faithfulness import STEADY, faithfulness_profile, write_faithfulness_report
from glimpse.cli import app
from glimpse.eval.faithfulness import faithfulness_curve
from glimpse.toy import world
from glimpse.toy.localisation import answer_word_token

FAST = {"baseline": "mean", "step": 0.25, "random_orders": 1}


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


@pytest.fixture(scope="module")
def case(shipped):
    sample = world.make_sample(11)  # "what color is the circle?", answered right
    explanation = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question)
    assert explanation.answer == sample.answer
    return sample, explanation, faithfulness_profile(shipped.model, shipped.processor, explanation, **FAST)


def test_the_profile_holds_the_holistic_and_every_tokens_curves(shipped, case):
    sample, explanation, result = case
    deletion = faithfulness_curve(shipped.model, shipped.processor, explanation, "insertion", **FAST)
    assert result["holistic"]["insertion"]["gain"] == pytest.approx(deletion.auc - deletion.random_auc)
    token = faithfulness_curve(shipped.model, shipped.processor, explanation, "deletion", token=2, **FAST)
    assert result["tokens"][2]["scores"] == pytest.approx(token.scores.tolist())
    assert result["tokens"][2]["gain"] == pytest.approx(token.random_auc - token.auc)
    assert [row["token"] for row in result["tokens"]] == explanation.answer_tokens
    for row in result["tokens"]:
        moved = max(np.ptp(row["scores"]), np.ptp(row["random"]))
        assert row["image_dependent"] == (moved > STEADY)


def test_on_the_toy_world_only_the_answer_word_depends_on_the_image_and_its_map_is_faithful(case):
    sample, explanation, result = case
    word = answer_word_token(sample, explanation.answer_tokens)
    assert result["tokens"][word]["image_dependent"] and result["tokens"][word]["gain"] > 0.5
    # "the", "object", "is", "." are settled by the question and the grammar
    steady = [row for t, row in enumerate(result["tokens"]) if t != word and not row["image_dependent"]]
    assert len(steady) >= 3 and all(abs(row["gain"]) < STEADY for row in steady)


def test_the_report_and_the_command(shipped, case, tmp_path):
    sample, explanation, result = case
    page, data = write_faithfulness_report(shipped.model, shipped.processor, explanation, tmp_path / "r", **FAST)
    assert json.loads(data.read_text()) == json.loads(json.dumps(result))
    text = page.read_text()
    assert text.count("<tr><td>") == len(explanation.answer_tokens) and 'alt="deletion and insertion curves"' in text
    assert text.count("no (not judged)") == sum(not row["image_dependent"] for row in result["tokens"])
    explanation.save(tmp_path / "saved")
    runner = CliRunner()
    done = runner.invoke(app, ["analyze", "faithfulness", str(tmp_path / "saved"), "--out", str(tmp_path / "c"),
                               "--baseline", "mean", "--step", "0.5", "--random-orders", "1"])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "c" / "faithfulness.json").read_text())["options"]["step"] == 0.5
    bad = runner.invoke(app, ["analyze", "faithfulness", str(tmp_path / "saved"), "--out", str(tmp_path / "d"),
                              "--baseline", "noise"])
    assert bad.exit_code == 2 and "baseline must be one of blur, mean" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(app, ["analyze", "faithfulness", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
