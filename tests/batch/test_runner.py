"""glimpse.batch.run on the shipped shapes-world model: table, records, resume, failures, options."""

import json
import os
import signal

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import glimpse
from batch_inputs import SEED, write_jsonl, write_scenes
from glimpse.batch import load_explanation, read_table, run
from glimpse.batch.runner import resolve_methods
from glimpse.batch.store import COLUMNS, table_schema
from glimpse.errors import BatchError, OptionError
from glimpse.eval import auc_judd, cc, energy_in_mask, kl_div, nss, pointing_game, sim
from glimpse.toy import world


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Three scenes explained by glimpse and rollout, scene 1 by a box instead of a mask."""
    folder = tmp_path_factory.mktemp("batch")
    rows = write_scenes(folder / "in", 3)
    rows[1].pop("mask")
    rows[1]["box"] = [0, 0, 112, 112]
    fixations = np.zeros((224, 224), np.uint8)
    fixations[[30, 40, 150], [60, 70, 200]] = [1, 3, 2]  # fixation counts
    Image.fromarray(fixations).save(folder / "in" / "fixations_2.png")
    rows[2]["fixations"] = "fixations_2.png"
    write_jsonl(folder / "in" / "items.jsonl", rows)
    summary = run(folder / "in" / "items.jsonl", folder / "out", methods=["glimpse", "rollout"], figures=True)
    return folder, summary


def test_the_table_has_one_row_per_item_and_method_with_the_explanation(finished):
    folder, summary = finished
    assert (summary.done, summary.failed, summary.skipped, summary.left) == (3, 0, 0, 0)
    table = read_table(folder / "out")
    assert table.schema == table_schema() and table.column_names == list(COLUMNS)
    rows = table.to_pylist()
    assert [(r["id"], r["method"]) for r in rows] == [(f"scene-{i}", m) for i in range(3) for m in ("glimpse", "rollout")]
    loaded = glimpse.load(None, device="cpu")
    for row in rows:
        assert row["status"] == "done" and row["error"] is None and row["seconds"] > 0
        sample = world.make_dataset(3, SEED)[int(row["id"].split("-")[1])]
        explanation = load_explanation(folder / "out", row["id"], row["method"])
        again = glimpse.explain(loaded.model, loaded.processor, sample.image, sample.question, method=row["method"])
        assert row["answer"] == explanation.answer == again.answer and row["answer_generated"]
        assert row["expected_answer"] == sample.answer and row["correct"] == (row["answer"] == sample.answer)
        assert row["answer_tokens"] == explanation.answer_tokens
        np.testing.assert_allclose(row["token_weights"], again.token_weights, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(explanation.token_visual, again.token_visual, rtol=1e-4, atol=1e-6)
        mask = sample.mask if row["id"] != "scene-1" else np.zeros((224, 224), bool)
        if row["id"] == "scene-1":
            mask[:112, :112] = True
        assert row["pointing_game"] == pointing_game(explanation, mask)
        assert row["energy_in_mask"] == pytest.approx(energy_in_mask(explanation, mask))
        if row["id"] == "scene-2":
            counts = np.asarray(Image.open(folder / "in" / "fixations_2.png"), dtype=np.float64)
            saliency = explanation.visual_map(resolution="image")
            assert row["nss"] == pytest.approx(nss(saliency, counts)) and row["cc"] == pytest.approx(cc(saliency, counts))
            assert row["auc_judd"] == pytest.approx(auc_judd(saliency, counts))
            assert row["kl_div"] == pytest.approx(kl_div(saliency, counts)) and row["sim"] == pytest.approx(sim(saliency, counts))
        else:
            assert row["nss"] is None and row["cc"] is None and row["auc_judd"] is None
        assert json.loads(row["options"]) == get_params(row["method"])
        item = folder / "out" / row["arrays"]
        assert item.is_file() and item.with_suffix(".png").is_file() and item.with_suffix(".html").is_file()


def get_params(method):
    return glimpse.get_method(method).params()


def test_a_rerun_skips_everything_and_rebuilds_the_same_table(finished):
    folder, _ = finished
    before = pq.read_table(folder / "out" / "results.parquet")
    (folder / "out" / "results.parquet").unlink()
    summary = run(folder / "in" / "items.jsonl", folder / "out", methods=["glimpse", "rollout"], figures=True)
    assert (summary.done, summary.failed, summary.skipped) == (0, 0, 3)
    assert pq.read_table(folder / "out" / "results.parquet").equals(before)


def test_other_settings_are_refused_and_force_adds_a_method(finished, tmp_path):
    folder, _ = finished
    with pytest.raises(BatchError, match="other settings"):
        run(folder / "in" / "items.jsonl", folder / "out", methods=["glimpse", "rollout"], options={"layer_fraction": 0.5})
    out = tmp_path / "copy"
    summary = run(folder / "in" / "items.jsonl", out, methods=["glimpse"], max_answer_tokens=2)
    assert summary.done == 3
    summary = run(folder / "in" / "items.jsonl", out, methods=["glimpse", "raw_attention"], max_answer_tokens=2,
                  force=True)
    assert (summary.done, summary.skipped) == (3, 0) and any("methods" in w for w in summary.warnings)
    rows = read_table(out).to_pylist()
    assert [r["method"] for r in rows] == ["glimpse", "raw_attention"] * 3
    assert all(len(r["answer_tokens"]) == 2 for r in rows)


def test_a_failed_item_is_recorded_and_retried_alone(tmp_path):
    rows = write_scenes(tmp_path / "in", 3)
    rows[1]["image"] = "missing.png"
    write_jsonl(tmp_path / "in" / "items.jsonl", rows)
    summary = run(tmp_path / "in" / "items.jsonl", tmp_path / "out")
    assert (summary.done, summary.failed) == (2, 1)
    table = {r["id"]: r for r in read_table(tmp_path / "out").to_pylist()}
    assert table["scene-1"]["status"] == "failed" and table["scene-1"]["error"].startswith("ImageError: image file not")
    assert table["scene-1"]["answer"] is None and table["scene-0"]["status"] == "done"
    assert run(tmp_path / "in" / "items.jsonl", tmp_path / "out").skipped == 3  # a failed item is finished too
    world.make_dataset(3, SEED)[1].image.save(tmp_path / "in" / "missing.png")
    done_before = (tmp_path / "out" / table["scene-0"]["arrays"]).stat().st_mtime_ns
    summary = run(tmp_path / "in" / "items.jsonl", tmp_path / "out", retry_failed=True)
    assert (summary.done, summary.failed, summary.skipped) == (1, 0, 2)
    assert (tmp_path / "out" / table["scene-0"]["arrays"]).stat().st_mtime_ns == done_before
    assert [r["status"] for r in read_table(tmp_path / "out").to_pylist()] == ["done"] * 3


def test_ground_truth_that_does_not_fit_is_a_note_not_a_failure(tmp_path):
    rows = write_scenes(tmp_path / "in", 1)
    Image.new("L", (10, 10)).save(tmp_path / "in" / "small.png")
    rows[0]["mask"] = "small.png"
    write_jsonl(tmp_path / "in" / "items.jsonl", rows)
    run(tmp_path / "in" / "items.jsonl", tmp_path / "out")
    (row,) = read_table(tmp_path / "out").to_pylist()
    assert row["status"] == "done" and row["pointing_game"] is None
    assert any("no mask metrics: the mask" in note and "10x10" in note for note in row["notes"])


def test_options_go_to_the_methods_that_take_them():
    resolved = resolve_methods(["glimpse", "rollout", "glimpse:layer_fraction=0.25:exclude_sinks=false"],
                               {"exclude_sinks": True, "glimpse.layer_fraction": 0.5})
    methods = {label: (name, params) for label, name, params in resolved}
    assert methods["glimpse"][1]["exclude_sinks"] and methods["rollout"][1]["exclude_sinks"]
    assert methods["glimpse"][1]["layer_fraction"] == 0.5 and "layer_fraction" not in methods["rollout"][1]
    variant = methods["glimpse:layer_fraction=0.25:exclude_sinks=false"]
    assert variant[0] == "glimpse" and variant[1]["layer_fraction"] == 0.25 and not variant[1]["exclude_sinks"]
    for methods, options, message in ((["glimpse"], {"bogus": 1}, "takes the option 'bogus'"),
                                      (["glimpse"], {"rollout.exclude_sinks": True}, "does not use"),
                                      (["rollout"], {"rollout.layer_fraction": 0.5}, "takes the option"),
                                      (["glimpse", "glimpse"], {}, "named twice"), ([], {}, "at least one")):
        with pytest.raises(OptionError, match=message):
            resolve_methods(methods, options)
    with pytest.raises(glimpse.MethodError, match="unknown|no method"):
        resolve_methods(["nonsense"], {})
    with pytest.raises(glimpse.OptionError):
        resolve_methods(["glimpse:bogus=1"], {})


def test_variants_of_one_method_are_rows_of_their_own(tmp_path):
    write_scenes(tmp_path / "in", 2)
    variant = "glimpse:token_weighting=uniform"
    run(tmp_path / "in" / "items.jsonl", tmp_path / "out", methods=["glimpse", variant], max_answer_tokens=3)
    rows = read_table(tmp_path / "out").to_pylist()
    assert [r["method"] for r in rows] == ["glimpse", variant] * 2
    assert json.loads(rows[1]["options"])["token_weighting"] == "uniform"
    np.testing.assert_allclose(rows[1]["token_weights"], np.full(len(rows[1]["token_weights"]), 1 / 3), rtol=1e-5)
    files = sorted(p.name for p in (tmp_path / "out" / rows[1]["arrays"]).parent.iterdir())
    assert all(":" not in name and "=" not in name for name in files) and len(files) == 4
    assert load_explanation(tmp_path / "out", "scene-0", variant).params["token_weighting"] == "uniform"


@pytest.fixture
def ctrl_c():
    """Ctrl-C as in a terminal (a background job, CI's, may start with SIGINT ignored); restored after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_after_the_current_item_and_the_rerun_finishes(tmp_path, ctrl_c):
    write_scenes(tmp_path / "in", 4)
    seen = []

    def progress(finished, total):
        seen.append(finished)
        if finished == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: stop after this item
    summary = run(tmp_path / "in" / "items.jsonl", tmp_path / "out", progress=progress)
    assert summary.interrupted and (summary.done, summary.left) == (2, 2) and seen == [1, 2]
    assert len(read_table(tmp_path / "out")) == 2  # the table of what is finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    summary = run(tmp_path / "in" / "items.jsonl", tmp_path / "out")
    assert (summary.done, summary.skipped, summary.interrupted) == (2, 2, False)
    assert [r["id"] for r in read_table(tmp_path / "out").to_pylist()] == [f"scene-{i}" for i in range(4)]


def test_shards_share_one_folder_and_together_make_the_whole_table(tmp_path):
    write_scenes(tmp_path / "in", 5)
    done = [run(tmp_path / "in" / "items.jsonl", tmp_path / "out", shard=(k, 2), max_answer_tokens=1).done
            for k in range(2)]
    assert sum(done) == 5 and min(done) > 0
    assert [r["id"] for r in read_table(tmp_path / "out").to_pylist()] == [f"scene-{i}" for i in range(5)]


def test_an_unknown_engine_and_a_missing_table_are_refused(tmp_path):
    write_scenes(tmp_path / "in", 1)
    with pytest.raises(BatchError, match="engine must be one of local, ray"):
        run(tmp_path / "in" / "items.jsonl", tmp_path / "out", engine="spark")
    with pytest.raises(BatchError, match="run the batch first"):
        read_table(tmp_path / "nothing")


def test_a_second_ctrl_c_stops_at_once_and_keeps_what_is_finished(tmp_path, ctrl_c):
    write_scenes(tmp_path / "in", 3)

    def progress(finished, total):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the second raises KeyboardInterrupt there and then
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "in" / "items.jsonl", tmp_path / "out", progress=progress)
    assert [r["id"] for r in read_table(tmp_path / "out").to_pylist()] == ["scene-0"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_attention_map_and_word_gaze_are_scored_by_the_documented_rules(tmp_path):
    from glimpse.eval import fixations_from_map, prompt_cc, prompt_spearman

    rows = write_scenes(tmp_path / "in", 1)
    human = np.random.default_rng(0).integers(0, 256, (224, 224)).astype(np.uint8)
    Image.fromarray(human).save(tmp_path / "in" / "attention.png")
    gaze = [float(w) for w in range(len(rows[0]["question"].split()))]
    rows[0].update(attention_map="attention.png", question_fixations=gaze)
    write_jsonl(tmp_path / "in" / "items.jsonl", rows)
    run(tmp_path / "in" / "items.jsonl", tmp_path / "out", fixation_top=0.2)
    (row,) = read_table(tmp_path / "out").to_pylist()
    explanation = load_explanation(tmp_path / "out", "scene-0", "glimpse")
    saliency = explanation.visual_map(0, resolution="image")
    assert row["nss"] == pytest.approx(nss(saliency, fixations_from_map(human, 0.2)))
    assert row["auc_judd"] == pytest.approx(auc_judd(saliency, fixations_from_map(human, 0.2)))
    assert row["cc"] == pytest.approx(cc(saliency, human)) and row["sim"] == pytest.approx(sim(saliency, human))
    assert row["prompt_cc"] == pytest.approx(prompt_cc(explanation.prompt_word_scores, gaze))
    assert row["prompt_spearman"] == pytest.approx(prompt_spearman(explanation.prompt_word_scores, gaze))
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["fixation_top"] == 0.2
    with pytest.raises(BatchError, match="other settings .*fixation_top: 0.2 before, 0.1 now"):
        run(tmp_path / "in" / "items.jsonl", tmp_path / "out")
    with pytest.raises(BatchError, match=r"fixation_top .* in \(0, 1\]"):
        run(tmp_path / "in" / "items.jsonl", tmp_path / "out", fixation_top=0)
