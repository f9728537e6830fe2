"""Methods side by side on one answer (`glimpse.compare`, `glimpse compare`), on the shipped model."""

import re

import pytest
from PIL import Image
from typer.testing import CliRunner

import glimpse
from glimpse.cli import app
from glimpse.compare import CELL, DPI, HEADER, LABEL, TOKENS, compare
from glimpse.toy.world import make_sample

METHODS = ["glimpse", "raw_attention", "rollout", "raw_attention:layer=99"]  # the last fails: the toy has 4 layers
FAILING = "raw_attention:layer=99"


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


@pytest.fixture(scope="module")
def sample():
    return make_sample(0)


@pytest.fixture(scope="module")
def comparison(shipped, sample):
    return compare(shipped.model, shipped.processor, sample.image, sample.question, METHODS)


def test_every_method_explains_the_one_answer_generated_once(comparison, sample):
    assert comparison.answer_generated and comparison.answer == sample.answer  # the toy answers right
    assert comparison.methods == METHODS and list(comparison.explanations) == METHODS[:3]
    ids = {tuple(e.answer_token_ids) for e in comparison.explanations.values()}
    assert len(ids) == 1 and {e.answer for e in comparison.explanations.values()} == {sample.answer}
    assert [e.method for e in comparison.explanations.values()] == METHODS[:3]
    assert all(e.answer_generated for e in comparison.explanations.values())


def test_a_method_failing_on_the_input_is_a_failed_column(comparison):
    assert list(comparison.errors) == [FAILING]
    assert comparison.errors[FAILING] == "OptionError: layer 99 is out of range for a language model with 4 layers"
    page = comparison.to_html()
    assert page.count('<th class="method failed">') == 1
    assert page.count(comparison.errors[FAILING]) == 1  # once, in the whole answer's row


def test_the_page_has_a_column_per_method_and_a_row_per_token_shown(comparison):
    T = len(comparison.answer_tokens)
    assert comparison.shown_tokens() == list(range(min(T, TOKENS))) and comparison.shown_tokens(2) == [0, 1]
    page = comparison.to_html(tokens=2)
    assert page.startswith("<!DOCTYPE html>") and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert re.findall(r'<th class="method[^>]*>([^<]+)<', page) == METHODS
    assert page.count('<tr class="whole">') == 1 and page.count('<tr class="token">') == 2
    assert page.count("data:image/jpeg;base64,") == 3 * 3  # the methods that ran x (whole answer + 2 tokens)
    assert f"the first 2 of its {T} tokens are shown" in page and "glimpse-toy" in page
    with pytest.raises(glimpse.GlimpseError, match="0 or more"):
        comparison.shown_tokens(-1)


def test_the_png_is_the_grid(comparison, tmp_path):
    fig = comparison.figure(tokens=2)
    assert len(fig.axes) == 3 * len(METHODS)  # rows: the whole answer and 2 tokens
    assert [ax.get_title() for ax in fig.axes[:len(METHODS)]] == METHODS
    assert "failed:" in fig.axes[3].texts[0].get_text()
    comparison.to_png(tmp_path / "grid.png", tokens=2)
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.size == (round((LABEL + CELL * len(METHODS)) * DPI), round((HEADER + CELL * 3) * DPI))


def test_several_images_are_a_column_each_per_method(shipped, sample):
    two = compare(shipped.model, shipped.processor, [sample.image, make_sample(1).image], sample.question,
                  ["raw_attention"], answer="there are four objects.")
    assert not two.answer_generated and two.explanations["raw_attention"].answer_generated is False
    fig = two.figure(tokens=1)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["raw_attention\nimage 0", "raw_attention\nimage 1"]
    assert len(fig.axes) == 2 * 2
    assert two.to_html(tokens=1).count("data:image/jpeg;base64,") == 2 * 2  # both images, in both rows


def test_save_writes_the_page_the_grid_and_each_explanation(comparison, tmp_path):
    comparison.save(tmp_path / "out", tokens=1)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"compare.html", "compare.png", "glimpse",
                                                             "raw_attention", "rollout"}
    assert glimpse.Explanation.load(tmp_path / "out" / "rollout").method == "rollout"


def test_every_method_failing_is_one_error(shipped, sample):
    args = (shipped.model, shipped.processor, sample.image, sample.question)
    with pytest.raises(glimpse.GlimpseError, match="every method failed on this input: raw_attention:layer=99: "
                                                   "OptionError: layer 99 .*; gradcam_attn:layer=-9: OptionError"):
        compare(*args, ["raw_attention:layer=99", "gradcam_attn:layer=-9"], answer="there are three objects.")
    with pytest.raises(glimpse.AnswerError, match="^the answer to explain is empty$"):  # the input's own error
        compare(*args, ["raw_attention", "rollout"], answer="  ")


def test_unknown_methods_and_options_fail_before_any_work(sample):
    with pytest.raises(glimpse.MethodError, match="unknown method 'nope'"):
        compare(None, None, sample.image, sample.question, ["rollout", "nope"])
    with pytest.raises(glimpse.OptionError, match="no method of this run"):
        compare(None, None, sample.image, sample.question, ["rollout"], options={"layer": 1})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sample):
    folder = tmp_path_factory.mktemp("compare")
    sample.image.save(folder / "scene.png")
    (folder / "text.png").write_text("not an image")
    (folder / "full").mkdir()
    (folder / "full" / "mine.txt").write_text("precious")
    return folder


def invoke(workdir, monkeypatch, *args):
    monkeypatch.chdir(workdir)
    return CliRunner().invoke(app, ["compare", *args])


def test_the_command_writes_the_page_and_the_grid(workdir, sample, monkeypatch):
    result = invoke(workdir, monkeypatch, "-i", "scene.png", "-q", sample.question, "--tokens", "2", "--device", "cpu",
                    "--methods", "raw_attention,rollout,gradcam_attn", "--set", "gradcam_attn.layer=9", "-o", "out")
    assert result.exit_code == 0, result.output
    assert f"answer:   {sample.answer}  (generated)" in result.stdout
    assert "warning: gradcam_attn failed: OptionError: layer 9 is out of range" in result.stderr
    assert {p.name for p in (workdir / "out").iterdir()} == {"compare.html", "compare.png", "raw_attention", "rollout"}
    page = (workdir / "out" / "compare.html").read_text(encoding="utf-8")
    assert page.count('<th class="method') == 3 and page.count('<tr class="token">') == 2


@pytest.mark.parametrize("args,message", [
    (["-i", "missing.png"], "image file not found"),
    (["-i", "text.png"], "not an image file"),
    (["-i", "scene.png", "-q", "  "], "the question is empty"),
    (["-i", "scene.png", "--methods", "rollout,nope"], "unknown method 'nope'"),
    (["-i", "scene.png", "--set", "novalue"], "KEY=VALUE"),
    (["-i", "scene.png", "--set", "rollout.layer=1"], "no method of this run (rollout) takes the option 'layer'"),
    (["-i", "scene.png", "-o", "full"], "--overwrite"),
])
def test_bad_input_is_one_line_and_exit_2(workdir, monkeypatch, args, message):
    if "-q" not in args:
        args = [*args, "-q", "how many objects are there?"]
    if "-o" not in args:
        args = [*args, "-o", "bad"]
    result = invoke(workdir, monkeypatch, "--methods", "rollout", *args)
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (workdir / "bad").exists() and (workdir / "full" / "mine.txt").read_text() == "precious"
