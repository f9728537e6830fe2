"""Bias: modality shares (golden values), counterfactual prompts on the toy model, the reports and
the commands."""

import json
from dataclasses import replace

import numpy as np
import pytest

import glimpse
from batch_inputs import write_scenes
from glimpse.analysis import bias
from glimpse.analysis.bias import (
    contains_word,
    counterfactual_summary,
    modality_shares,
    parse_swap,
    swap_word,
    word_score,
    write_batch_bias_report,
    write_bias_report,
    write_counterfactual_report,
)
from glimpse.batch import load_explanation, run
from glimpse.errors import GlimpseError
from glimpse.eval.metrics import energy_in_mask
from glimpse.toy import world

# "what shape is the green object?" in a scene of a green circle and a purple cross.
SCENE = 131


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


@pytest.fixture(scope="module")
def scene(shipped):
    """The scene, the other object's index, the colour absent from it, the counterfactual (three
    swaps: to the other object's colour, to an absent colour, a word not in the question) and how
    many explanations it ran."""
    sample = world.make_sample(SCENE)
    asked, other = sample.objects[sample.target], 1 - sample.target
    absent = next(c for c in world.COLORS if c not in {o.color for o in sample.objects})
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bias, "explain", lambda *a, **k: calls.append(a[3]) or glimpse.explain(*a, **k))
        result = bias.counterfactual(shipped.model, shipped.processor, sample.image, sample.question,
                                     [(asked.color, sample.objects[other].color), (asked.color, absent),
                                      ("man", "woman")])
    return sample, other, result, calls


def test_shares_golden_values(scene):
    original = scene[2]["explanation"]
    assert original.prompt_words == ["what", "shape", "is", "the", "green", "object"]
    assert original.word_of_token == [0, 1, 2, 3, 4, 5, 5]
    visual = np.zeros(original.visual.size, dtype=np.float32)
    visual[:3] = [3, -5, 1]  # positive image mass 4
    prompt = np.array([1, 0, 0, 0, 0, -2, 0.5], dtype=np.float32)  # positive mass 1.5; "object" sums to -1.5
    token_visual = np.stack([np.zeros_like(visual), np.r_[2.0, -np.ones(visual.size - 1)]]).astype(np.float32)
    token_prompt = np.array([np.zeros(7), [0, 0, 0, 0, 6, 0, 0]], dtype=np.float32)
    built = replace(original, visual=visual, prompt=prompt, token_visual=token_visual, token_prompt=token_prompt,
                    answer_tokens=["x", "y"])
    result = modality_shares(built)
    assert result["method"] == "glimpse" and result["same_scale"] is True
    assert result["holistic"] == {"image_share": pytest.approx(8 / 11), "image_mass": 4.0, "prompt_mass": 1.5,
                                  "top_prompt_word": "what"}
    assert result["tokens"][0] == {"token": "x", "image_share": None, "image_mass": 0.0, "prompt_mass": 0.0,
                                   "top_prompt_word": None}  # no positive relevance anywhere
    assert result["tokens"][1] == {"token": "y", "image_share": 0.25, "image_mass": 2.0, "prompt_mass": 6.0,
                                   "top_prompt_word": "green"}
    assert modality_shares(replace(built, method="occlusion"))["same_scale"] is False
    assert word_score(built, "GREEN") == 0.0 and word_score(built, "man") is None
    assert word_score(built, "object") == pytest.approx(-1.5) and word_score(built, "what") == 1.0


def test_words_are_swapped_whole_and_bad_swaps_refused():
    assert contains_word("what shape is the Green object?", "green")
    assert not contains_word("a greenish object", "green")
    assert swap_word("the red reddish Red.", "red", "blue") == "the blue reddish blue."
    assert parse_swap(" man = woman ") == ("man", "woman")
    for text in ("red", "=blue", "red=", "dark red=blue"):
        with pytest.raises(GlimpseError, match="swap"):
            parse_swap(text)


def test_swapping_the_colour_asks_about_the_other_object(scene):
    sample, other, result, calls = scene
    to_other, to_absent = result["swaps"]
    absent = to_absent["replacement"]
    # The original is explained once, then each applied swap.
    assert calls == [sample.question, "what shape is the purple object?", f"what shape is the {absent} object?"]
    assert result["answer"] == sample.answer == "the green object is a circle."
    assert result["skipped"] == ["man=woman"]
    # The model answers the swapped question as the world does: the other object's shape.
    assert to_other["answer"] == world.question_answer(sample.objects, 2, other)[1] == "the purple object is a cross."
    assert to_other["answer_changed"] and to_other["peak_moved"]
    assert 0.5 < to_other["map_cc"] < 0.99
    # The map's mass moves off the green circle onto the purple cross.
    before, after = result["explanation"], to_other["explanation"]
    asked_mask, other_mask = sample.segmentation == sample.target, sample.segmentation == other
    assert energy_in_mask(after, other_mask) > energy_in_mask(before, other_mask) + 0.02
    assert energy_in_mask(after, asked_mask) < energy_in_mask(before, asked_mask) - 0.02
    assert to_other["image_share_change"] == pytest.approx(to_other["image_share"] - result["image_share"])
    green = before.prompt_words.index("green")
    assert to_other["word_score"] == pytest.approx(float(before.prompt_word_scores[green]))
    # About an absent colour the model still names a shape: an answer that only echoes the swap is unchanged.
    assert to_absent["answer"].startswith(f"the {absent} object is a")
    assert to_absent["answer_changed"] == (to_absent["answer"] != f"the {absent} object is a circle.")


def test_the_summary_counts_and_averages_the_applied_swaps():
    def swap(changed, cc):
        return {"answer_changed": changed, "peak_moved": False, "map_cc": cc}
    results = [{"swaps": [swap(True, 0.5), swap(False, 0.7)], "skipped": ["a=b"]},
               {"swaps": [swap(True, 0.9)], "skipped": []}, {"swaps": [], "skipped": ["c=d", "e=f"]}]
    summary = counterfactual_summary(results)
    assert (summary["items"], summary["swaps"], summary["skipped"]) == (3, 3, 3)
    assert summary["answer_changed"]["mean"] == pytest.approx(2 / 3) and summary["map_cc"]["mean"] == pytest.approx(0.7)
    assert summary["peak_moved"]["mean"] == 0.0
    low, high = summary["map_cc"]["low"], summary["map_cc"]["high"]
    assert 0.5 <= low <= 0.7 <= high <= 0.9 and summary["map_cc"]["n"] == 3
    assert counterfactual_summary([{"swaps": [], "skipped": ["a=b"]}])["answer_changed"] is None


def test_the_reports_show_every_map_and_round_trip(scene, tmp_path):
    _, _, result, _ = scene
    page, data = write_counterfactual_report([result], tmp_path / "cf")
    text = page.read_text()
    assert text.count("<figure>") == 2 * len(result["swaps"]) and "what shape is the purple object?" in text
    assert "man=woman" in text
    stored = json.loads(data.read_text())
    plain = {k: v for k, v in result.items() if k != "explanation"}
    plain["swaps"] = [{k: v for k, v in s.items() if k != "explanation"} for s in result["swaps"]]
    assert stored["items"] == [json.loads(json.dumps(plain))]
    assert stored["summary"] == json.loads(json.dumps(counterfactual_summary([result])))
    explanation = result["explanation"]
    page, data = write_bias_report(explanation, tmp_path / "bias")
    text = page.read_text()
    assert text.count("<figure>") == 1 and text.count("<tr><td>") == len(explanation.answer_tokens)
    assert json.loads(data.read_text()) == json.loads(json.dumps(modality_shares(explanation)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bias-batch")
    write_scenes(folder / "in", 3)
    run(folder / "in" / "items.jsonl", folder / "batch", max_answer_tokens=2)
    return folder


def test_the_batch_report_gives_each_items_share_and_the_mean(batch, tmp_path):
    page, data = write_batch_bias_report(batch / "batch", tmp_path)
    result = json.loads(data.read_text())
    expected = []
    for item in result["items"]:
        e = load_explanation(batch / "batch", item["id"], "glimpse")
        image, prompt = np.clip(e.visual, 0, None).sum(), np.clip(e.prompt, 0, None).sum()
        expected.append(image / (image + prompt))
    assert [i["image_share"] for i in result["items"]] == pytest.approx(expected, rel=1e-5)
    assert len(expected) == 3 and result["image_share"]["mean"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert result["image_share"]["low"] <= result["image_share"]["mean"] <= result["image_share"]["high"]
    assert page.read_text().count("<tr><td>") == 3


def invoke(*args):
    from typer.testing import CliRunner

    from glimpse.cli import app

    return CliRunner().invoke(app, ["analyze", *args])


def test_the_commands_write_their_reports(scene, batch, tmp_path):
    sample, _, result, _ = scene
    result["explanation"].save(tmp_path / "saved")
    done = invoke("bias", str(tmp_path / "saved"), "--out", str(tmp_path / "a"))
    assert done.exit_code == 0 and (tmp_path / "a" / "bias.html").is_file()
    over = invoke("bias", "--batch", str(batch / "batch"), "--out", str(tmp_path / "b"))
    assert over.exit_code == 0 and len(json.loads((tmp_path / "b" / "bias.json").read_text())["items"]) == 3
    sample.image.save(tmp_path / "scene.png")
    one = invoke("counterfactual", "--image", str(tmp_path / "scene.png"), "--question", sample.question,
                 "--swap", "green=purple", "--swap", "man=woman", "--device", "cpu", "--out", str(tmp_path / "c"))
    assert one.exit_code == 0, one.output
    assert "green -> purple: 'the purple object is a cross.' (answer changed)" in one.stdout
    assert "1 skipped" in one.stdout and (tmp_path / "c" / "counterfactual.html").is_file()
    # Of the first two scenes only the first ("where is the yellow triangle?") names yellow.
    items = invoke("counterfactual", "--input", str(batch / "in" / "items.jsonl"), "--limit", "2", "--swap",
                   "yellow=red", "--device", "cpu", "--out", str(tmp_path / "d"))
    assert items.exit_code == 0, items.output
    stored = json.loads((tmp_path / "d" / "counterfactual.json").read_text())
    assert [i["id"] for i in stored["items"]] == ["scene-0"] and stored["items"][0]["swaps"][0]["question"] == (
        "where is the red triangle?")


@pytest.mark.parametrize("args, message", [
    (["--question", "what shape is the green object?"], "give --image and --question"),
    (["--image", "scene.png", "--question", "what shape is it?"], "give at least one --swap"),
    (["--image", "scene.png", "--question", "what shape is it?", "--swap", "red"], "a swap is WORD=REPLACEMENT"),
    (["--image", "scene.png", "--question", "what is it?", "--swap", "dark red=blue"], "replaces one word"),
    (["--image", "nowhere.png", "--question", "what is red?", "--swap", "red=blue"], "image file not found"),
    (["--image", "scene.png", "--question", "what is it?", "--swap", "man=woman"], "no swap's word occurs"),
    (["--input", "nowhere.jsonl", "--swap", "red=blue"], "does not exist"),
])
def test_bad_counterfactual_input_is_one_line(tmp_path, monkeypatch, args, message):
    world.make_sample(0).image.save(tmp_path / "scene.png")
    monkeypatch.chdir(tmp_path)
    result = invoke("counterfactual", *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_bias_needs_one_source(tmp_path):
    result = invoke("bias", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and result.stderr == "error: give an explanation folder, or --batch\n"
