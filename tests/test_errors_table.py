"""docs/errors.md, row by row, through the API and the command line.

Every row whose "raised" cell names an error has a case here: the API raises that `GlimpseError`
subclass, and the command line (a separate process's behaviour, run in-process through
`glimpse.cli.main`) prints one line `error: ...`, exits 2, shows no traceback and writes nothing.
Every "warning" row: the API warns with a `GlimpseWarning` subclass and notes it on the result, and
the command line prints it once as `warning: ...` and succeeds. A row the command line cannot express
(an in-memory array) says why. The table and the cases are checked against each other."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import glimpse
import glimpse.batch
import glimpse.images
from bad_inputs import tamper, write_batch_inputs, write_crafted_checkpoint, write_images, write_model_folders
from cli_runs import run, run_process
from glimpse.loading import Loaded
from glimpse.models import adapter_for

TABLE = Path(__file__).parents[1] / "docs" / "errors.md"
QUESTION = "what color is the circle?"
LONG_PROMPT = "what color is the circle " * 400 + "?"


@dataclass
class Context:
    folder: Path  # the bad inputs, written once; the command line runs here
    shipped: Any
    tiny: Any
    tiny_dir: Path
    saved: Any  # an explanation of the shipped model, to save
    monkeypatch: pytest.MonkeyPatch
    read_only: Path


@dataclass
class Case:
    raised: type
    match: str  # in the API's message and in the command line's line
    api: Callable[[Context], Any]
    cli: list[str] | Callable[[Context], list[str]] | None  # None: not expressible on the command line
    setup: Callable[[Context], None] = lambda ctx: None
    cli_only_why: str = ""
    cli_match: str | None = None  # where the command line words it otherwise (its own usage errors)


def ask(image: Any = "scene.png", prompt: str = QUESTION, answer: str | None = None, tiny: bool = False,
        **options: Any) -> Callable[[Context], Any]:
    """`glimpse.explain` of the shipped (or tiny) model on a file of the bad inputs (or an object)."""
    def call(ctx: Context) -> Any:
        model = ctx.tiny if tiny else ctx.shipped
        picture = ctx.folder / image if isinstance(image, str) else image
        return glimpse.explain(model.model, model.processor, picture, prompt, answer, **options)
    return call


def explain_args(image: str = "scene.png", prompt: str = QUESTION, *more: str) -> list[str]:
    return ["explain", "-i", image, "-p", prompt, *more, "-o", "out"]


def patch_max_pixels(ctx: Context) -> None:
    ctx.monkeypatch.setattr(glimpse.images, "MAX_PIXELS", 10_000)


def patch_context(ctx: Context) -> None:
    """A context length that leaves the generated answer two tokens."""
    from glimpse.pipeline import _encoded

    n_prompt = _encoded(ctx.shipped.model, ctx.shipped.processor, ctx.folder / "scene.png", QUESTION, None,
                        [])[3]["input_ids"].shape[1]
    ctx.monkeypatch.setattr(type(adapter_for(ctx.shipped.model, ctx.shipped.processor)), "context_length",
                            lambda self: n_prompt + 2)


def prepare_dataset(ctx: Context) -> Any:
    from glimpse.eval.datasets import prepare

    return prepare("vqa-hat", ctx.folder / "empty-root", ctx.folder / "prepared", None, "val")


def train_crafted(ctx: Context) -> Any:
    from glimpse.toy.recipe import config_from
    from glimpse.toy.train import train

    return train(ctx.folder / "crafted", 0, config_from({}))


def batch_with_other_method(ctx: Context) -> Any:
    return glimpse.batch.run(ctx.folder / "good.jsonl", ctx.folder / "done", methods=["rollout"])


CASES: dict[str, Case] = {
    # Images
    "a path that does not exist, or a folder": Case(
        glimpse.ImageError, "image file not found", ask("missing.png"), explain_args("missing.png")),
    "a file that is not an image, or a truncated one": Case(
        glimpse.ImageError, "not an image file", ask("notes.png"), explain_args("notes.png")),
    "a decompression bomb (a header declaring billions of pixels)": Case(
        glimpse.ImageError, "declares more pixels than is safe to decode", ask("bomb.png"), explain_args("bomb.png")),
    "more than `glimpse.images.MAX_PIXELS` (100 megapixels)": Case(
        glimpse.ImageError, "more than", ask(), explain_args(), setup=patch_max_pixels),
    "16-bit, 32-bit or float grey (`I;16`, `I`, `F`)": Case(
        glimpse.InputWarning, "I;16 image was converted to 8-bit RGB", ask("deep.png"), explain_args("deep.png")),
    "several frames (GIF, TIFF)": Case(
        glimpse.InputWarning, "has 2 frames; the first is explained", ask("frames.gif"), explain_args("frames.gif")),
    "another array, `None`, a number, an empty list of images": Case(
        glimpse.ImageError, "an image array is height x width", ask(np.zeros((2, 3, 4, 5))), None,
        cli_only_why="the command line takes image files, not arrays"),
    "an image the model's processor mostly crops away (under half kept)": Case(
        glimpse.InputWarning, "the model's processor kept", ask("wide.png", tiny=True, answer=" red"),
        lambda ctx: explain_args("wide.png", QUESTION, "-a", " red", "-m", str(ctx.tiny_dir))),
    # Prompts, answers, models and devices
    "an empty prompt": Case(glimpse.PromptError, "the prompt is empty", ask(prompt=" "), explain_args(prompt=" ")),
    "a prompt (with system prompt and image tokens) that leaves no room in the model's context length "
    "(`max_position_embeddings`)": Case(
        glimpse.PromptError, "context length of 512", ask(prompt=LONG_PROMPT), explain_args(prompt=LONG_PROMPT)),
    "the model's image placeholder (`<image>`, `<\\|image_pad\\|>`, ...) typed in the prompt or system prompt": Case(
        glimpse.PromptError, "image placeholder", ask(prompt="<image> " + QUESTION),
        explain_args("scene.png", "<image> " + QUESTION)),
    "a given answer that does not fit after the prompt": Case(
        glimpse.AnswerError, "explain fewer answer tokens", ask(answer=" red" * 600, max_answer_tokens=1000),
        explain_args("scene.png", QUESTION, "-a", " red" * 600, "--max-answer-tokens", "1000")),
    "a generated answer that reaches the context length": Case(
        glimpse.InputWarning, "generated up to the model's context length", ask(), explain_args(), setup=patch_context),
    "an answer longer than 64 tokens, no `max_answer_tokens` given": Case(
        glimpse.InputWarning, "only its first 64 are explained", ask(answer=" red" * 70),
        explain_args("scene.png", QUESTION, "-a", " red" * 70)),
    "an answer with no known word (only unknown words, the end token, special tokens)": Case(
        glimpse.AnswerError, "zzz", ask(answer="zzz qqq"), explain_args("scene.png", QUESTION, "-a", "zzz qqq")),
    "answer words the tokenizer does not know": Case(
        glimpse.InputWarning, "'zzz' are not in the model's vocabulary", ask(answer="zzz red"),
        explain_args("scene.png", QUESTION, "-a", "zzz red")),
    "question words the tokenizer does not know": Case(
        glimpse.InputWarning, "'What', 'man', 'holding' are not in the model's vocabulary",
        ask(prompt="What is the man holding?"), explain_args("scene.png", "What is the man holding?")),
    "a model folder without weights, with corrupt weights, with weights of other shapes than its config, without "
    "tokenizer or processor files, with a `config.json` that is not JSON": Case(
        glimpse.ModelLoadError, "has no weights", lambda ctx: glimpse.load(ctx.folder / "no-weights", device="cpu"),
        ["explain", "-m", "no-weights", "-i", "scene.png", "-p", QUESTION, "-o", "out"]),
    "weights lacking parameters the config asks for": Case(
        glimpse.InputWarning, "parameter(s) its config.json asks for",
        lambda ctx: glimpse.load(ctx.folder / "deeper-config", device="cpu"),
        ["explain", "-m", "deeper-config", "-i", "scene.png", "-p", QUESTION, "-a", " red", "-o", "out"]),
    "`cuda` without CUDA, `cuda:N` past the last GPU, `mps` without Metal, an unknown device name": Case(
        glimpse.ModelLoadError, "gpu3", lambda ctx: glimpse.load(device="gpu3"), explain_args("scene.png", QUESTION,
                                                                                            "--device", "gpu3")),
    # Method options
    "an option the method does not take": Case(
        glimpse.OptionError, "foo", ask(foo=1), explain_args("scene.png", QUESTION, "--set", "foo=1")),
    "a value of the wrong type (`layer_fraction=abc`)": Case(
        glimpse.OptionError, "layer_fraction", ask(layer_fraction="abc"),
        explain_args("scene.png", QUESTION, "--set", "layer_fraction=abc")),
    "other text for a boolean option (`exclude_sinks=no`)": Case(
        glimpse.OptionError, "must be bool, got 'no'", ask(exclude_sinks="no"),
        explain_args("scene.png", QUESTION, "--set", "exclude_sinks=no")),
    "`NaN`, `Infinity`": Case(
        glimpse.OptionError, "must be a finite number", ask(head_lambda=float("nan")),
        explain_args("scene.png", QUESTION, "--set", "head_lambda=NaN")),
    "`max_new_tokens` or `max_answer_tokens` below 1, or not whole": Case(
        glimpse.AnswerError, "max_new_tokens must be a whole number of at least 1", ask(max_new_tokens=0),
        explain_args("scene.png", QUESTION, "--max-new-tokens", "0"),
        cli_match="Invalid value for '--max-new-tokens': Input should be greater than or equal to 1"),
    # Output folders and saved explanations
    "an output folder that cannot be written": Case(
        glimpse.OutputError, "Permission denied", lambda ctx: ctx.saved.save(ctx.read_only / "e"),
        lambda ctx: ["explain", "-i", "scene.png", "-p", QUESTION, "-o", str(ctx.read_only / "e")]),
    "an output folder that already holds files": Case(
        glimpse.OutputError, "already holds files", lambda ctx: ctx.saved.save(ctx.folder / "held"),
        ["explain", "-i", "scene.png", "-p", QUESTION, "-o", "held"]),
    "a saved explanation with invalid JSON, a missing or mistyped field, arrays of the wrong type or shape, an "
    "index out of range": Case(
        glimpse.ExplanationError, "is not valid JSON", lambda ctx: glimpse.Explanation.load(ctx.folder / "not-json"),
        ["analyze", "tokens", "not-json", "--out", "out"]),
    "a saved explanation naming a file outside its folder": Case(
        glimpse.ExplanationError, "images[0].file", lambda ctx: glimpse.Explanation.load(ctx.folder / "outside"),
        ["analyze", "tokens", "outside", "--out", "out"]),
    # Batch inputs, datasets, training
    "a malformed batch row (no id, no question, no image, a bad box, bad `question_fixations`, a repeated id)": Case(
        glimpse.BatchError, "line 2", lambda ctx: glimpse.batch.run(ctx.folder / "repeated.jsonl", ctx.folder / "out"),
        ["batch", "-i", "repeated.jsonl", "-o", "out"]),
    "an output folder made with other settings": Case(
        glimpse.BatchError, "rollout", batch_with_other_method,
        ["batch", "-i", "good.jsonl", "-o", "done", "--methods", "rollout"]),
    "a dataset folder missing files of its layout": Case(
        glimpse.DatasetError, "vqahat_val", prepare_dataset,
        ["evaluate", "--dataset", "vqa-hat", "--root", "empty-root", "--out", "out"]),
    "a training checkpoint that is not one (a crafted pickle)": Case(
        glimpse.TrainingError, "is not a checkpoint of this trainer", train_crafted, ["toy", "train", "--out", "crafted"]),
}


def table_rows() -> dict[str, str]:
    """The input cell of every row of docs/errors.md with a "raised" column -> that cell."""
    rows, raised_at = {}, None
    for line in TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not cells or set(cells[0]) <= {"-"}:
            continue
        if cells[0] == "input":
            raised_at = cells.index("raised") if "raised" in cells else None
        elif raised_at is not None:
            rows[cells[0]] = cells[raised_at]
    return rows


def test_every_error_and_warning_row_of_the_table_has_a_case_of_its_kind():
    rows = table_rows()
    assert len(rows) > 30
    named = {text: raised for text, raised in rows.items() if raised != "-"}
    assert set(named) == set(CASES), set(named) ^ set(CASES)
    for text, raised in named.items():
        expected = "warning" if issubclass(CASES[text].raised, glimpse.GlimpseWarning) else \
            f"`{CASES[text].raised.__name__}`"
        assert raised == expected, text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llava_dir):
    folder = tmp_path_factory.mktemp("bad-inputs")
    write_images(folder)
    write_model_folders(folder, tiny_llava_dir)
    write_batch_inputs(folder)
    write_crafted_checkpoint(folder)
    (folder / "empty-root").mkdir()
    shipped = glimpse.load(device="cpu")
    saved = glimpse.explain(shipped.model, shipped.processor, folder / "scene.png", QUESTION, " red")
    saved.save(folder / "saved")
    tamper(folder / "saved", folder)
    saved.save(folder / "held")
    glimpse.batch.run(folder / "good.jsonl", folder / "done", methods=["raw_attention"])
    return folder, shipped, saved


@pytest.fixture
def ctx(workdir, tiny_llava, tiny_llava_dir, monkeypatch, read_only):
    folder, shipped, saved = workdir
    yield Context(folder, shipped, Loaded(*tiny_llava), tiny_llava_dir, saved, monkeypatch, read_only)
    shutil.rmtree(folder / "out", ignore_errors=True)  # what a warning's successful run wrote


@pytest.mark.filterwarnings("ignore::glimpse.DomainWarning")  # a converted scene is no scene: beside the point
@pytest.mark.parametrize("row", CASES)
def test_through_the_api(ctx, row):
    case = CASES[row]
    case.setup(ctx)
    if issubclass(case.raised, glimpse.GlimpseWarning):
        with pytest.warns(case.raised, match=re.escape(case.match)):
            result = case.api(ctx)
        if isinstance(result, glimpse.Explanation):
            assert any(case.match in line for line in result.notes), result.notes
    else:
        with pytest.raises(case.raised, match=re.escape(case.match)):
            case.api(ctx)


def outputs(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("row", CASES)
def test_through_the_command_line(ctx, row):
    case = CASES[row]
    if case.cli is None:
        assert case.cli_only_why
        pytest.skip(case.cli_only_why)
    case.setup(ctx)
    args = case.cli(ctx) if callable(case.cli) else case.cli
    before = outputs(ctx.folder)
    result = run(*args, cwd=ctx.folder)
    assert result.exception is None and "Traceback" not in result.output, result.output
    if issubclass(case.raised, glimpse.GlimpseWarning):
        assert result.returncode == 0, result.output
        assert result.stderr.count(case.match) == 1, result.stderr
        assert [line for line in result.stderr.splitlines() if case.match in line][0].startswith("warning: ")
        return
    assert result.returncode == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert (case.cli_match or case.match) in result.stderr, result.stderr
    assert outputs(ctx.folder) == before  # nothing written


def test_each_case_raises_a_documented_class_glimpse_exports():
    for case in CASES.values():
        assert issubclass(case.raised, (glimpse.GlimpseError, glimpse.GlimpseWarning))
        assert case.raised.__name__ in glimpse.__all__ and case.raised.__doc__, case.raised


def test_a_warning_raised_by_each_method_is_shown_once_in_a_process_of_its_own(workdir, tmp_path):
    """As a user runs it (Python shows a warning once per process and place, the CLI once per message):
    two methods each read, and convert, the 16-bit image."""
    folder = workdir[0]
    result = run_process("compare", "-i", str(folder / "deep.png"), "-q", QUESTION, "-o", str(tmp_path / "o"),
                         "--methods", "glimpse,raw_attention", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("I;16 image was converted to 8-bit RGB") == 1, result.stderr
    assert result.stderr.count("\n") == result.stderr.count("warning: "), result.stderr  # each a one-line warning
    for method in ("glimpse", "raw_attention"):
        notes = json.loads((tmp_path / "o" / method / "explanation.json").read_text())["notes"]
        assert any("I;16 image was converted" in line for line in notes), notes
