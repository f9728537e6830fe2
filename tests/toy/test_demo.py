"""The shipped model as a user meets it: the demo, explain without --model, toy bench."""

import json
import os
import subprocess
import sys

import numpy as np
from typer.testing import CliRunner

from glimpse.cli import app
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED
from glimpse.toy.localisation import answer_word_token, single_object_samples
from tiny_models import rand_image


def test_demo_runs_offline_from_a_fresh_process(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", "demo", "--seed", "27"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "glimpse-out" / "run-001"
    assert {"overlay.png", "report.html", "explanation.json", "arrays.safetensors"} <= {p.name for p in folder.iterdir()}
    doc = json.loads((folder / "explanation.json").read_text())
    sample = world.make_sample(27)
    assert doc["question"] == sample.question and doc["extra"]["expected_answer"] == sample.answer
    assert "holistic map: maximum on the asked-about evidence" in result.stdout
    word = answer_word_token(sample, doc["answer_tokens"])
    assert sample.qtype == 1 and word is not None  # scene 27: one red cross, 'what color is the cross?'
    assert (folder / "answer-word.png").exists()
    assert f"map of the answer word {doc['answer_tokens'][word].strip()!r}" in result.stdout


def test_demo_of_a_counting_question_has_no_answer_word(tmp_path):
    from glimpse.toy.demo import run_demo

    result = run_demo(tmp_path / "out", seed=3)  # scene 3: "how many objects are there?"
    assert result.sample.qtype == 4 and result.answer_word is None
    assert not (tmp_path / "out" / "answer-word.png").exists() and (tmp_path / "out" / "overlay.png").exists()


def test_explain_defaults_to_the_shipped_model(tmp_path, monkeypatch):
    sample = world.make_sample(5)
    sample.image.save(tmp_path / "scene.png")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["explain", "-i", "scene.png", "-p", sample.question, "-o", "out"])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert doc["images"][0]["layout"]["tiles"][0]["rows"] == 14 and doc["answer"]
    assert "warning:" not in result.output and doc["notes"] == []


def test_explain_without_a_model_says_the_shipped_model_knows_only_its_world(tmp_path, monkeypatch):
    rand_image(300, 200, seed=2).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["explain", "-i", "photo.png", "-p", "what is the man holding?", "-o", "out"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: the shipped default model knows only the synthetic shapes world") == 1
    doc = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert len(doc["notes"]) == 2 and "shapes world" in doc["notes"][1]  # after the unknown "man", "holding"
    assert "'man', 'holding' are not in the model's vocabulary" in doc["notes"][0]
    assert "shapes world" in (tmp_path / "out" / "report.html").read_text()


def test_toy_bench_prints_accuracy_and_localisation(tmp_path):
    result = CliRunner().invoke(app, ["toy", "bench", "--n", "8", "--n-localisation", "4"])
    assert result.exit_code == 0, result.output
    k = len(single_object_samples(4, HELDOUT_SEED))
    assert (f"toy bench: accuracy: 8 generations; localisation: {k} type 1-3 questions of 4 scenes x 3 methods = "
            f"{3 * k} explanations") in result.stderr
    assert f"localisation on {k} type 1-3 questions of 4 scenes" in result.stdout
    assert f"{3 * k}/{3 * k}" in result.stderr  # the finished bar, on stderr
    assert "toy bench:" not in result.stdout and "eta" not in result.stdout  # stdout holds only the tables
    assert "exact-match accuracy on 8 held-out scenes" in result.output
    assert "glimpse" in result.output and "raw_attention" in result.output and "chance" in result.output
    assert "holistic-map pointing by question type" in result.output and "type 1 (n=" in result.output
    assert "glimpse:token_weighting=confidence" in result.output  # the paper's confidence-only ablation


def test_toy_bench_compares_options_of_a_method_and_rejects_malformed_ones():
    options = ["toy", "bench", "--n", "2", "--n-localisation", "3"]
    result = CliRunner().invoke(app, options + ["--methods", "glimpse:token_weighting=uniform:exclude_sinks=true"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert sum(row[:1] == ["glimpse:token_weighting=uniform:exclude_sinks=true"] for row in rows) == 2  # both tables
    for bad in ("glimpse:uniform", "glimpse:token_weighting=sideways", "no_such_method", ","):
        result = CliRunner().invoke(app, options + ["--methods", bad])
        assert result.exit_code == 2 and "Traceback" not in result.output, (bad, result.output)


def test_toy_bench_localisation_follows_n_by_default():
    result = CliRunner().invoke(app, ["toy", "bench", "--n", "10", "--methods", "raw_attention"])
    assert result.exit_code == 0, result.output
    k = len(single_object_samples(2, HELDOUT_SEED))  # 10 // 5 scenes
    assert k > 0 and (f"accuracy: 10 generations; localisation: {k} type 1-3 questions of 2 scenes x 1 methods = "
                      f"{k} explanations") in result.stderr
    assert f"localisation on {k} type 1-3 questions of 2 scenes" in result.stdout


def test_toy_bench_skips_localisation_when_asked_or_too_few_scenes():
    for options in (["--n", "2", "--n-localisation", "0"], ["--n", "4"]):  # 4 // 5 = 0 localisation scenes
        result = CliRunner().invoke(app, ["toy", "bench", *options, "--methods", "no_such_method"])
        assert result.exit_code == 0, result.output  # the methods are not even parsed
        assert "localisation: skipped" in result.stderr and "localisation on" not in result.stdout
        assert f"exact-match accuracy on {options[1]} held-out scenes" in result.stdout


def test_accuracy_reports_progress_after_each_batch():
    import glimpse
    from glimpse.toy.bench import evaluate_accuracy

    model, processor = glimpse.load(None, device="cpu")
    done: list[int] = []
    result = evaluate_accuracy(model, processor, n=5, batch_size=2, progress=done.append)
    assert done == [2, 4, 5] and result["n"] == 5


def test_shipped_model_explanations_are_finite():
    import glimpse

    model, processor = glimpse.load(None, device="cpu")
    sample = world.make_sample(11)
    explanation = glimpse.explain(model, processor, sample.image, sample.question)
    assert np.isfinite(explanation.visual).all() and explanation.visual_map().shape == (224, 224)
