"""The command line as a user runs it: a tiny model saved to a folder, real files, exit codes."""

import json
import re
import subprocess
import sys

import pytest

from cli_runs import run, run_process
from tiny_models import rand_image

QUESTION = "what color is the object?"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    rand_image(90, 60, seed=1).save(folder / "img.png")
    (folder / "text.png").write_text("not an image")
    return folder


def test_explain_writes_all_outputs(tiny_llava_dir, workdir):
    result = run_process("explain", "--model", str(tiny_llava_dir), "--image", "img.png", "--prompt", QUESTION,
                 "--out", "out1", "--max-new-tokens", "4", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "answer:" in result.stdout and "out1" in result.stdout
    names = sorted(p.name for p in (workdir / "out1").iterdir())
    assert names == ["arrays.safetensors", "explanation.json", "image_0.png", "overlay.png", "report.html", "tokens.png"]
    assert f"wrote out1/: {', '.join(names)}\n" in result.stdout  # every file written, named
    assert re.search(r"whole-answer map peaks at x=\d+, y=\d+ \((top|middle|bottom) (left|centre|right)\)|"
                     r"whole-answer map peaks at x=\d+, y=\d+ \(centre\)", result.stdout)
    assert re.search(r"weightiest answer tokens \(tokens.png shows every token's map\): '.+' weight \d\.\d\d, its map "
                     r"peaks at", result.stdout)
    doc = json.loads((workdir / "out1" / "explanation.json").read_text())
    assert doc["question"] == QUESTION and doc["answer_generated"] is True


def test_explain_given_answer_and_default_folder(tiny_llava_dir, workdir):
    result = run("explain", "-m", str(tiny_llava_dir), "-i", "img.png", "-p", QUESTION, "-a", "a red circle",
                 "--layer-fraction", "0.5", "--token-weighting", "confidence", cwd=workdir)
    assert result.returncode == 0, result.stderr
    doc = json.loads((workdir / "glimpse-out" / "run-001" / "explanation.json").read_text())
    assert doc["answer"] == "a red circle" and doc["params"]["token_weighting"] == "confidence"


def test_existing_output_is_never_overwritten(tiny_llava_dir, workdir):
    (workdir / "keep").mkdir()
    (workdir / "keep" / "mine.txt").write_text("precious")
    result = run("explain", "-m", str(tiny_llava_dir), "-i", "img.png", "-p", QUESTION, "-o", "keep", cwd=workdir)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (workdir / "keep" / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize("args,message", [
    (["-i", "missing.png", "-p", QUESTION], "image file not found"),
    (["-i", "text.png", "-p", QUESTION], "not an image file"),
    (["-i", "img.png", "-p", "   "], "prompt is empty"),
    (["-i", "img.png", "-p", QUESTION, "-a", "  "], "answer to explain is empty"),
    (["-i", "img.png", "-p", QUESTION, "--method", "nope"], "unknown method"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_llava_dir, workdir, args, message):
    result = run("explain", "-m", str(tiny_llava_dir), *args, "-o", "bad", cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model,message", [
    ("./no/such/folder", "model folder does not exist"),
    ("some-org/not-cached-model", "cannot load model"),
])
def test_bad_model_is_one_line_and_exit_2(workdir, model, message):
    result = run("explain", "-m", model, "-i", "img.png", "-p", QUESTION, "-o", "bad", cwd=workdir)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unsupported_architecture_names_the_supported_ones(workdir):
    folder = workdir / "weird"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["FooForBar"], "model_type": "llama"}))
    result = run("explain", "-m", str(folder), "-i", "img.png", "-p", QUESTION, "-o", "bad", cwd=workdir)
    assert result.returncode == 2 and "LlavaForConditionalGeneration" in result.stderr


@pytest.mark.parametrize("command", [[], ["explain"], ["methods"]])
def test_help(workdir, command):
    result = run(*command, "--help", cwd=workdir)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_methods_lists_glimpse_with_its_paper(workdir):
    result = run("methods", cwd=workdir)
    assert result.returncode == 0 and "glimpse" in result.stdout and "2506.18985" in result.stdout


def test_any_method_and_its_options_from_the_cli(tiny_llava_dir, workdir):
    result = run("explain", "-m", str(tiny_llava_dir), "-i", "img.png", "-p", QUESTION, "-a", "a red",
                 "--method", "raw_attention", "--set", "layer=-1", "--set", "exclude_sinks=true", "-o", "raw",
                 cwd=workdir)
    assert result.returncode == 0, result.stdout
    doc = json.loads((workdir / "raw" / "explanation.json").read_text())
    assert doc["method"] == "raw_attention" and doc["params"]["layer"] == -1 and doc["params"]["exclude_sinks"] is True


def test_bad_set_option(tiny_llava_dir, workdir):
    result = run("explain", "-m", str(tiny_llava_dir), "-i", "img.png", "-p", QUESTION, "--set", "novalue",
                 "-o", "bad2", cwd=workdir)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr


def test_an_option_the_method_does_not_take_is_refused_before_loading(workdir):
    result = run("explain", "-m", "no/such-model", "-i", "img.png", "-p", QUESTION, "--method", "rollout",
                 "--head-lambda", "2", "-o", "bad3", cwd=workdir)
    assert result.returncode == 2 and "--head-lambda is not an option of method 'rollout'" in result.stderr
    result = run("explain", "-m", "no/such-model", "-i", "img.png", "-p", QUESTION, "--method", "rollout",
                 "--set", "layer=2", "-o", "bad4", cwd=workdir)
    assert result.returncode == 2 and "'rollout' does not take 'layer'" in result.stderr


def test_methods_lists_every_option_with_its_declared_default(workdir):
    from glimpse.methods import list_methods, option_defaults

    result = run("methods", cwd=workdir)
    for name, cls in list_methods().items():
        assert f"\n{name}" in "\n" + result.stdout
        for option, default in option_defaults(cls).items():
            assert f"--set {option}={json.dumps(default)}: {cls.options[option]}" in result.stdout


def test_help_answers_without_importing_torch(workdir):
    code = ("import sys; from typer.testing import CliRunner; from glimpse.cli import app; import glimpse; "
            "out = CliRunner().invoke(app, ['--help']); "
            "print(out.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=workdir)
    assert done.stdout.split() == ["0", "False", "False"], done.stderr


def test_toy_train_offers_every_recipe_setting_as_a_flag(workdir):
    from glimpse.toy.recipe import knobs

    result = run("toy", "train", "--help", cwd=workdir)
    assert result.returncode == 0
    for name in knobs():
        assert f"--{name.replace('_', '-')}" in result.stdout


def test_toy_train_flags_reach_the_recipe(workdir, monkeypatch, tmp_path):
    import glimpse.toy.train as toy_train

    seen = {}
    monkeypatch.setattr(toy_train, "train", lambda out, seed, cfg: seen.update(out=out, seed=seed, cfg=cfg) or out)
    result = run("toy", "train", "--out", str(tmp_path / "r"), "--seed", "3", "--answer-steps", "7",
                 "--text-layers", "2", "--no-bf16", "--init-tower", "x/model", cwd=workdir)
    assert result.returncode == 0, result.stdout
    cfg = seen["cfg"]
    assert seen["seed"] == 3 and cfg.answer_steps == 7 and cfg.dims.text_layers == 2 and cfg.bf16 is False
    assert cfg.init_tower == "x/model" and cfg.dense_steps == toy_train.TrainConfig().dense_steps


def test_batch_command_summarises_and_exits_by_outcome(tmp_path):
    from batch_inputs import write_jsonl, write_scenes

    rows = write_scenes(tmp_path / "in", 2)
    items = tmp_path / "in" / "items.jsonl"
    out = tmp_path / "out"
    done = run("batch", "-i", str(items), "-o", str(out), "--max-answer-tokens", "1", cwd=tmp_path)
    assert done.returncode == 0, done.output
    assert "2 done, 0 failed, 0 skipped" in done.stdout and f"table: {out / 'results.parquet'}" in done.stdout
    rows.append({"id": "broken", "image": "nowhere.png", "question": "what?"})
    write_jsonl(items, rows)
    partial = run("batch", "-i", str(items), "-o", str(out), "--max-answer-tokens", "1", cwd=tmp_path)
    assert partial.returncode == 1 and "0 done, 1 failed, 2 skipped" in partial.stdout
    assert "--retry-failed" in partial.stderr and "the input changed" in partial.stderr


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "shard 3/2"), (["--set", "nonsense=1"], "takes the option 'nonsense'"),
    (["--methods", "nope"], "nope"), (["--engine", "spark"], "engine must be one of")])
def test_batch_command_refuses_bad_arguments_in_one_line(tmp_path, args, message):
    from batch_inputs import write_scenes

    write_scenes(tmp_path / "in", 1)
    result = run("batch", "-i", str(tmp_path / "in" / "items.jsonl"), "-o", str(tmp_path / "o"), *args, cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_batch_command_names_the_malformed_line(tmp_path):
    (tmp_path / "items.jsonl").write_text('{"id": "a", "question": "q?"}\n')
    result = run("batch", "-i", str(tmp_path / "items.jsonl"), "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 2 and "items.jsonl line 1: no image" in result.stderr


def test_evaluate_command_prints_the_table(tmp_path):
    result = run("evaluate", "--dataset", "toy", "--limit", "2", "--methods", "glimpse,raw_attention", "--out",
                 str(tmp_path / "ev"), "--set", "glimpse.max_memory=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| glimpse | 2 |" in result.stdout and "| raw_attention | 2 |" in result.stdout
    assert (tmp_path / "ev" / "data" / "items.jsonl").is_file() and (tmp_path / "ev" / "evaluation.csv").is_file()
    ablation = run("evaluate", "--dataset", "toy", "--limit", "1", "--methods", "glimpse", "--ablation", "--out",
                   str(tmp_path / "ab"), cwd=tmp_path)
    assert ablation.returncode == 0, ablation.stderr
    assert "| glimpse:depth_lambda=0 | 1 |" in ablation.stdout and "| glimpse:layer_fraction=0.6 | 1 |" in ablation.stdout
    refused = run("evaluate", "--dataset", "vqa", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert refused.returncode == 2 and "unknown dataset 'vqa'; known: toy, items, vqa-hat" in refused.stderr


def test_evaluate_reads_a_published_layout_and_scores_image_and_word_gaze(tmp_path):
    from dataset_layouts import write_vqa_mhug

    write_vqa_mhug(tmp_path / "mhug")
    result = run("evaluate", "--dataset", "vqa-mhug", "--root", str(tmp_path / "mhug"), "--methods", "glimpse",
                 "--out", str(tmp_path / "ev"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "vqa-mhug: 2 items in" in result.stderr
    header = result.stdout.splitlines()[0]
    assert "NSS" in header and "AUC-Judd" in header and "prompt-word CC" in header and "prompt-word Spearman" in header
    missing = run("evaluate", "--dataset", "vqa-hat", "--root", str(tmp_path / "mhug"), "--out", str(tmp_path / "x"),
                  cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "lacks" in missing.stderr
    assert "vqahat_val (the VQA-HAT maps" in missing.stderr and "Traceback" not in missing.output


def test_toy_scenes_writes_a_batch_input_that_batch_reads(tmp_path):
    from glimpse.batch import read_items

    result = run("toy", "scenes", "--n", "3", "--out", str(tmp_path / "scenes"), cwd=tmp_path)
    assert result.returncode == 0 and "3 scenes" in result.stdout
    items = read_items(tmp_path / "scenes" / "items.jsonl")
    assert [i.id for i in items] == ["scene-0", "scene-1", "scene-2"]
    assert all(i.mask.is_file() and i.images[0].is_file() and i.expected_answer for i in items)
    again = run("toy", "scenes", "--n", "3", "--out", str(tmp_path / "scenes"), cwd=tmp_path)
    assert again.returncode == 2 and "already holds files" in again.stderr


def test_serve_without_gradio_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    result = run("serve", cwd=tmp_path)
    assert result.returncode == 2 and "pip install 'glimpse-lvlm[ui]'" in result.stderr
