"""The token-dynamics report: its numbers are the explanation's, its page shows every token."""

import json
import re

import numpy as np
import pytest

import glimpse
from glimpse.analysis import token_dynamics, write_tokens_report
from glimpse.toy import world


@pytest.fixture(scope="module")
def explanation():
    loaded = glimpse.load(None, device="cpu")
    sample = world.make_sample(11)
    return glimpse.explain(loaded.model, loaded.processor, sample.image, sample.question)


def test_the_dynamics_are_the_explanations_per_token_means(explanation):
    rows = token_dynamics(explanation)["tokens"]
    assert [r["token"] for r in rows] == explanation.answer_tokens
    np.testing.assert_allclose([r["visual_relevance"] for r in rows], explanation.token_visual.mean(1), rtol=1e-6)
    np.testing.assert_allclose([r["prompt_relevance"] for r in rows], explanation.token_prompt.mean(1), rtol=1e-6)
    np.testing.assert_allclose([r["weight"] for r in rows], explanation.token_weights, rtol=1e-6)
    for t, row in enumerate(rows):
        assert row["top_question_word"] == explanation.prompt_words[int(np.argmax(explanation.token_prompt_word_scores(t)))]


def test_the_report_shows_the_plot_every_tokens_map_and_the_table(explanation, tmp_path):
    page, data = write_tokens_report(explanation, tmp_path)
    text = page.read_text()
    assert json.loads(data.read_text()) == json.loads(json.dumps(token_dynamics(explanation)))
    assert text.count('alt="map of token') == len(explanation.answer_tokens) and 'alt="relevance plot"' in text
    assert len(re.findall(r'src="data:image/(?:png|jpeg);base64,', text)) == len(explanation.answer_tokens) + 1
    assert text.count("<tr><td>") == len(explanation.answer_tokens) and explanation.question in text


def test_the_command_reads_a_saved_explanation_or_a_batch_item(explanation, tmp_path):
    from typer.testing import CliRunner

    from glimpse.cli import app

    explanation.save(tmp_path / "saved")
    runner = CliRunner()
    done = runner.invoke(app, ["analyze", "tokens", str(tmp_path / "saved"), "--out", str(tmp_path / "a")])
    assert done.exit_code == 0 and (tmp_path / "a" / "tokens.html").is_file()
    neither = runner.invoke(app, ["analyze", "tokens", "--out", str(tmp_path / "b")])
    assert neither.exit_code == 2 and "give an explanation folder" in neither.output
    missing = runner.invoke(app, ["analyze", "tokens", "--batch", str(tmp_path), "--id", "x", "--out", str(tmp_path / "c")])
    assert missing.exit_code == 2 and "is not a batch folder" in missing.output and not (tmp_path / "items").exists()
