"""The `glimpse` command line: thin wrappers over the library."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Optional

import typer

from . import progress as bars  # the module; `progress` is many commands' callback
from .errors import GlimpseError
from .limits import DEFAULT_MAX_ANSWER_TOKENS

GLIMPSE_FLAG = "GLIMPSE option (glimpse, glimpse_fast; default: the method's, see `glimpse methods`); the same as"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Explain what a vision-language model looked at when it answered: maps over the image "
                       "and scores for the prompt words, for the whole answer and token by token.")


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"glimpse {__version__}")
        raise typer.Exit()


@app.callback()
def options(context: typer.Context,
            version: bool = typer.Option(False, "--version", is_eager=True, callback=show_version,
                                         help="Print the version and exit."),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bars (generation, backward passes, "
                                                              "integration steps, batches).")) -> None:
    # Options before the command: `glimpse --quiet explain ...`. Quiet holds for this command only.
    if quiet:
        token = bars.set_shown(False)
        context.call_on_close(lambda: bars.reset(token))


ANSWER_CAP_HELP = (f"Explain only the first N answer tokens (default: {DEFAULT_MAX_ANSWER_TOKENS}, with a warning when "
                   "an answer is cut).")


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def new_output_folder(out: Optional[Path], overwrite: bool) -> Path:
    """A folder for the outputs that never overwrites earlier results unless asked to, checked to be
    writable before any work is done. The default, glimpse-out/run-NNN, is created here, exclusively:
    two runs at once in one directory take two numbers."""
    import os
    import tempfile

    if out is None:
        base = Path("glimpse-out")
        n = 1
        while True:
            folder = base / f"run-{n:03d}"
            try:
                base.mkdir(exist_ok=True)
                folder.mkdir()  # never exist_ok: a folder another run took is that run's
                return folder
            except FileExistsError:
                if not base.is_dir():
                    fail(f"cannot make the output folder {folder}: {base} exists and is not a folder; pass --out")
                n += 1
            except OSError as exc:
                fail(f"cannot make the output folder {folder}: {Path.cwd()} is not writable ({exc.strerror or exc}); "
                     "run from another directory or pass --out")
    place = out  # the folder itself or, when it is yet to be made, the nearest folder above it
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        fail(f"--out {out} exists and is not a folder" if place == out else f"--out {out}: {place} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".glimpse-write-check-", dir=place))
        held = out.exists() and any(out.iterdir())
    except OSError as exc:
        fail(f"--out {out}: {place.absolute()} is not writable ({exc.strerror or exc}); choose another folder")
    if held and not overwrite:
        fail(f"--out {out} already holds files; choose another folder or pass --overwrite")
    return out


@app.command()
def explain(
    image: Path = typer.Option(..., "--image", "-i", help="Image file (any format PIL reads; EXIF rotation applied)."),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The question to ask about the image."),
    answer: Optional[str] = typer.Option(None, "--answer", "-a",
                                         help="Explain this given answer instead of generating one."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Hub id or local model folder. Default: the shipped shapes-world model."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Output folder. Default: a new glimpse-out/run-NNN folder."),
    overwrite: bool = typer.Option(False, help="Allow writing into an --out folder that already holds files."),
    method: str = typer.Option("glimpse", help="Explanation method (see `glimpse methods`)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16."),
    device_map: Optional[str] = typer.Option(None, help='"auto" spreads a model too large for one GPU over the GPUs (and CPU).'),
    revision: Optional[str] = typer.Option(None, help="Model revision (branch, tag or commit) for hub ids."),
    trust_remote_code: bool = typer.Option(False, help="Allow the model repository's own code to run."),
    max_new_tokens: int = typer.Option(32, min=1, help="Longest answer to generate."),
    max_answer_tokens: Optional[int] = typer.Option(None, min=1, help=ANSWER_CAP_HELP),
    layer_fraction: Optional[float] = typer.Option(None, help=f"{GLIMPSE_FLAG} --set layer_fraction=F."),
    head_lambda: Optional[float] = typer.Option(None, help=f"{GLIMPSE_FLAG} --set head_lambda=F."),
    depth_lambda: Optional[float] = typer.Option(None, help=f"{GLIMPSE_FLAG} --set depth_lambda=F."),
    token_weighting: Optional[str] = typer.Option(None, help=f"{GLIMPSE_FLAG} --set token_weighting=MODE."),
    system_prompt: Optional[str] = typer.Option(None, help="System prompt to put before the question."),
    option: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                     help="Any method option, repeatable: e.g. --set layer=-1 --set exclude_sinks=true "
                                          "(values are read as JSON when they parse, else as text)."),
) -> None:
    """Explain a model's answer about an image; writes explanation.json, arrays, overlay.png, report.html."""
    import glimpse

    from .images import check_image

    folder = new_output_folder(out, overwrite)
    flags = dict(layer_fraction=layer_fraction, head_lambda=head_lambda, depth_lambda=depth_lambda,
                 token_weighting=token_weighting)
    try:
        # Check what is cheap to check before loading a model that may take minutes.
        options = method_options(method, {k: v for k, v in flags.items() if v is not None}, option)
        check_image(image)
        if not prompt.strip():
            fail("the prompt is empty: give the question to ask about the image")
        with shown_as_lines():
            loaded = quiet_load(model, device, dtype, revision, trust_remote_code, device_map)
            result = glimpse.explain(loaded.model, loaded.processor, image, prompt, answer, method=method,
                                     max_new_tokens=max_new_tokens, max_answer_tokens=max_answer_tokens,
                                     system_prompt=system_prompt, **options)
        result.save(folder, overwrite=overwrite)
    except GlimpseError as exc:
        fail(str(exc))
    finally:
        if out is None:
            with suppress(OSError):
                folder.rmdir()  # the run folder taken for a run that wrote nothing (it fails when it holds files)
    report_result(result, folder)


@app.command()
def compare(
    image: list[Path] = typer.Option(..., "--image", "-i", help="Image file; repeat for several images."),
    question: str = typer.Option(..., "--question", "-q", help="The question to ask about the image(s)."),
    answer: Optional[str] = typer.Option(None, "--answer", "-a",
                                         help="Explain this given answer instead of generating one."),
    methods: str = typer.Option("glimpse,raw_attention,rollout",
                                help="Comma-separated methods (or METHOD:KEY=VALUE variants), a column each."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: compare.html, compare.png, a folder per method."),
    overwrite: bool = typer.Option(False, help="Allow writing into an --out folder that already holds files."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Hub id or local model folder. Default: the shipped shapes-world model."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
    option: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                     help="A method option for every method that takes it, or METHOD.KEY=VALUE for one; "
                                          "repeatable."),
    tokens: Optional[int] = typer.Option(None, min=0, help="Rows for the first N answer tokens (default: 12)."),
    max_new_tokens: int = typer.Option(32, min=1, help="Longest answer to generate."),
    max_answer_tokens: Optional[int] = typer.Option(None, min=1, help=ANSWER_CAP_HELP),
) -> None:
    """Methods side by side on one answer (generated once, or given): compare.html and compare.png, a
    column per method, the whole answer's maps, then a row per answer token. A method that fails on
    the input is a column saying why."""
    from .batch.runner import resolve_methods
    from .compare import compare as compare_methods
    from .images import check_image
    from .methods import parse_options

    folder = new_output_folder(out, overwrite)
    try:
        # Check what is cheap to check before loading a model that may take minutes.
        names, options = split_names(methods), parse_options(option)
        resolve_methods(names, options)
        for path in image:
            check_image(path)
        if not question.strip():
            fail("the question is empty: give the question to ask about the image")
        with shown_as_lines():
            loaded = quiet_load(model, device, "auto", None, False)
            result = compare_methods(loaded.model, loaded.processor, image, question, names, answer, options,
                                     max_new_tokens=max_new_tokens, max_answer_tokens=max_answer_tokens)
        result.save(folder, tokens, overwrite)
    except GlimpseError as exc:
        fail(str(exc))
    typer.echo(f"question: {question}")
    typer.echo(f"answer:   {result.answer}" + ("  (generated)" if result.answer_generated else "  (given)"))
    for label, error in result.errors.items():
        typer.echo(f"warning: {label} failed: {error}", err=True)
    typer.echo(f"wrote {folder}/: compare.html, compare.png and the explanation of {', '.join(result.explanations)} "
               "in a folder each")


def method_options(method: str, flags: dict, pairs: list[str]) -> dict:
    """The method's options from explain's dedicated flags and its --set KEY=VALUE pairs, checked
    against the method's declaration: a flag the method does not take is an error."""
    from .methods import get_method, method_class, parse_options

    declared = method_class(method).options
    for name in flags:
        if name not in declared:
            fail(f"--{name.replace('_', '-')} is not an option of method {method!r} "
                 f"(its options: {', '.join(declared) or 'none'}; see `glimpse methods`)")
    options = {**flags, **parse_options(pairs)}
    get_method(method, **options)
    return options


@contextmanager
def shown_as_lines() -> Iterator[None]:
    """glimpse's warnings (the fallbacks an explanation took) as one "warning:" line each on stderr,
    each message once however often it was raised."""
    from .errors import GlimpseWarning, collected

    try:
        with collected(GlimpseWarning) as messages:
            yield
    finally:
        for message in messages:
            typer.echo(f"warning: {message}", err=True)


def quiet_transformers() -> None:
    """No progress bars from transformers cluttering the terminal."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def quiet_load(model, device, dtype, revision, trust_remote_code, device_map=None):
    import glimpse

    quiet_transformers()
    return glimpse.load(model, device=device, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code,
                        device_map=device_map)


def report_result(result, folder: Path) -> None:
    """Print the answer, the most relevant prompt words, where the maps peak, and every file written."""
    from .summary import summary

    for line in summary(result):
        typer.echo(line)
    typer.echo(f"wrote {folder}/: " + ", ".join(sorted(p.name for p in folder.iterdir())))


def demo_help() -> str:
    from .toy.questions import QUESTION_FORMS

    return ("Offline demo on the shipped shapes-world model: draw a scene, ask, answer, explain. The model knows "
            "only the shapes world and was trained on four questions: "
            + "; ".join(f'"{form}"' for form in QUESTION_FORMS) + ".")


@app.command(help=demo_help())
def demo(
    seed: int = typer.Option(0, help="Which shapes-world scene to draw (any integer)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder. Default: a new glimpse-out/run-NNN."),
    overwrite: bool = typer.Option(False, help="Allow writing into an --out folder that already holds files."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Another shapes-world model folder (e.g. one you trained). Default: shipped."),
) -> None:
    from .folders import staged_folder
    from .toy.demo import run_demo

    folder = new_output_folder(out, overwrite)
    try:
        quiet_transformers()
        # Written at once, its answer-word picture included (saved after the explanation).
        with shown_as_lines(), staged_folder(folder, overwrite) as staging:
            result = run_demo(staging, seed, model)
    except GlimpseError as exc:
        fail(str(exc))
    finally:
        if out is None:
            with suppress(OSError):
                folder.rmdir()  # the run folder taken for a run that wrote nothing (it fails when it holds files)
    sample = result.sample
    verdict = "correct" if result.explanation.answer == sample.answer else f"expected: {sample.answer}"
    typer.echo(f"scene {seed}: {len(sample.objects)} object(s): "
               + ", ".join(f"{o.color} {o.shape} ({o.quadrant})" for o in sample.objects))
    report_result(result.explanation, folder)
    typer.echo(f"the answer is {verdict}")
    typer.echo(f"holistic map: maximum on the asked-about evidence: {'yes' if result.pointing else 'no'}; "
               f"share of the map on it: {result.energy:.0%} (the evidence covers {sample.mask.mean():.0%} of the image)")
    if result.answer_word is not None:
        word = result.explanation.answer_tokens[result.answer_word].strip()
        typer.echo(f"map of the answer word {word!r} (answer-word.png): maximum on the evidence: "
                   f"{'yes' if result.word_pointing else 'no'}; share of the map on it: {result.word_energy:.0%}")


@app.command()
def batch(
    input: Path = typer.Option(..., "--input", "-i",
                               help="Items: .jsonl, .csv, .parquet, a folder with a questions file, or a saved datasets "
                                    "dataset (docs/batch-format.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; rerunning the same command resumes it."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Hub id or local model folder. Default: the shipped shapes-world model."),
    methods: str = typer.Option("glimpse", help="Comma-separated methods, each explaining every item."),
    option: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                     help="A method option for every method that takes it, or METHOD.KEY=VALUE for one; "
                                          "repeatable."),
    shard: Optional[str] = typer.Option(None, help="i/n: only this process's share of the items (by a hash of the id)."),
    engine: str = typer.Option("local", help="local (this process) or ray (Ray Data; pip install 'glimpse-lvlm[ray]')."),
    workers: int = typer.Option(1, min=1, help="Model replicas on the ray engine (one GPU each where there are GPUs)."),
    retry_failed: bool = typer.Option(False, help="Rerun only the items whose records say they failed."),
    force: bool = typer.Option(False, help="Add to an output folder made with other settings (records keep theirs)."),
    figures: bool = typer.Option(False, help="Also write each item's overlay PNG and HTML report."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
    dtype: str = typer.Option("auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16."),
    revision: Optional[str] = typer.Option(None, help="Model revision (branch, tag or commit) for hub ids."),
    trust_remote_code: bool = typer.Option(False, help="Allow the model repository's own code to run."),
    max_new_tokens: int = typer.Option(32, min=1, help="Longest answer to generate (items without an answer)."),
    max_answer_tokens: Optional[int] = typer.Option(None, min=1, help=ANSWER_CAP_HELP),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items (of this shard)."),
    fixation_top: float = typer.Option(0.1, help="The share of an attention_map's pixels (its highest) that count as "
                                                 "fixations for NSS and AUC-Judd."),
) -> None:
    """Explain every item of a dataset with one or more methods: results.parquet, one record and
    safetensors file per item and method, resumable (docs/batch-format.md). Exit status 1 when some
    item failed (its error is in the table), 130 when stopped by Ctrl-C."""
    from .batch import run
    from .batch.items import parse_shard
    from .methods import parse_options

    try:
        with progress_bar() as progress:
            quiet_transformers()
            summary = run(input, out, model=model, methods=split_names(methods), options=parse_options(option),
                          shard=parse_shard(shard) if shard else None, engine=engine, workers=workers,
                          retry_failed=retry_failed, force=force, figures=figures, device=device, dtype=dtype,
                          revision=revision, trust_remote_code=trust_remote_code, max_new_tokens=max_new_tokens,
                          max_answer_tokens=max_answer_tokens, limit=limit, fixation_top=fixation_top,
                          progress=progress)
    except GlimpseError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"stopped; finished items are kept. Resume with: {resume_command()}", err=True)
        raise typer.Exit(130) from None
    for line in summary.warnings:
        typer.echo(f"warning: {line}", err=True)
    typer.echo(summary.line())
    typer.echo(f"table: {summary.table}")
    if summary.interrupted:
        typer.echo(f"resume with: {resume_command()}", err=True)
        raise typer.Exit(130)
    if summary.failed:
        typer.echo(f"{summary.failed} item(s) failed (see the error column); rerun them with --retry-failed", err=True)
        raise typer.Exit(1)


@app.command()
def evaluate(
    dataset: str = typer.Option(..., "--dataset", "-d",
                                help="toy (held-out shapes-world scenes), items (any batch input: docs/batch-format.md), "
                                     "vqa-hat, vqa-mhug or gqa (each read from --root in its published layout: "
                                     "docs/evaluation.md)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; rerunning the same command resumes it."),
    root: Optional[Path] = typer.Option(None, help="The dataset's folder (items: the batch input)."),
    split: str = typer.Option("val", help="train or val, for the published datasets."),
    methods: str = typer.Option("glimpse,raw_attention,rollout", help="Comma-separated methods to compare."),
    reference: Optional[str] = typer.Option(None, help="The method the others are tested against. Default: the first."),
    ablation: bool = typer.Option(False, help="Add GLIMPSE's ablation variants: no depth prior, no head weighting, each "
                                             "token weighting, layer_fraction 0.6 (docs/evaluation.md)."),
    faithfulness: Optional[str] = typer.Option(None, metavar="BASELINE",
                                               help="Also score deletion and insertion curves, removed pixels becoming "
                                                    "BASELINE: mean (the image's mean colour) or blur."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items (toy: N scenes; default 200)."),
    fixation_top: float = typer.Option(0.1, help="The share of a human attention map's pixels (its highest) that count "
                                                 "as fixations for NSS and AUC-Judd."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Hub id or local folder. Default: the shipped model."),
    option: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                                     help="A method option, as for batch (METHOD.KEY=VALUE for one method)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
) -> None:
    """Score methods on a dataset: each metric's mean with a bootstrap 95% interval, answer accuracy,
    and a paired test against the reference method; writes evaluation.md, .csv and .json (and the
    per-item records in OUT/batch)."""
    from .eval.datasets import prepare
    from .eval.evaluate import ABLATION
    from .eval.evaluate import evaluate as run_evaluation
    from .methods import parse_options

    try:
        prepared = prepare(dataset, root, out / "data", limit, split)
        typer.echo(f"{dataset}: {prepared.line()}", err=True)
        quiet_transformers()
        with shown_as_lines(), progress_bar() as progress, progress_bar("faithfulness") as scored:
            names = split_names(methods) + (list(ABLATION) if ablation else [])
            report = run_evaluation(prepared.items, out, methods=names, reference=reference, model=model,
                                    options=parse_options(option), device=device, limit=limit,
                                    fixation_top=fixation_top, progress=progress, faithfulness_progress=scored,
                                    faithfulness=None if faithfulness is None else {"baseline": faithfulness})
    except GlimpseError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"stopped; finished items are kept. Resume with: {resume_command()}", err=True)
        raise typer.Exit(130) from None
    typer.echo(report.markdown())
    typer.echo(f"wrote {out}/evaluation.md, evaluation.csv, evaluation.json; per-item records in {out}/batch")


@contextmanager
def progress_bar(description: str = "explaining") -> Iterator:
    """A `progress(finished, total)` callback drawing a bar with rate and ETA on stderr (from the first call)."""
    from tqdm import tqdm

    bar = None

    def progress(finished: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="item", desc=description, file=sys.stderr, dynamic_ncols=True,
                       disable=not bars.shown())
        bar.update(finished - bar.n)
    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def split_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def resume_command() -> str:
    import shlex

    return shlex.join(["glimpse", *sys.argv[1:]])


toy_app = typer.Typer(no_args_is_help=True, help="The shapes world and its shipped model: train, benchmark.")
app.add_typer(toy_app, name="toy")


def toy_train(out: Path = typer.Option(Path("runs/toy"), "--out", "-o",
                                       help="Run folder: log, checkpoint, final model in OUT/model."),
              seed: int = typer.Option(0, help="Training seed (the shipped model used 0)."), **recipe) -> None:
    """Train the shapes-world model from scratch (resumes from OUT's checkpoint). Every recipe setting
    is a flag whose default is the shipped model's recipe (glimpse.toy.recipe)."""
    import logging

    from .toy.recipe import config_from
    from .toy.train import train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    typer.echo(f"trained model: {train(out, seed, config_from(recipe))}")


def _with_recipe_flags(command):
    """`command` with one option per recipe setting of `glimpse.toy.train` (read from its defaults), so
    the recipe is declared once, in TrainConfig and Dims."""
    from .toy.recipe import knobs

    fixed = [p for p in inspect.signature(command).parameters.values() if p.kind is not p.VAR_KEYWORD]
    def flag(name: str, default: object) -> str:
        dashed = name.replace("_", "-")
        return f"--{dashed}/--no-{dashed}" if isinstance(default, bool) else f"--{dashed}"

    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=type(default),
                               default=typer.Option(default, flag(name, default)))
             for name, default in knobs().items()]
    command.__signature__ = inspect.Signature(fixed + extra)
    return command


toy_app.command("train")(_with_recipe_flags(toy_train))


@toy_app.command("scenes")
def toy_scenes(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the scenes, their masks and items.jsonl."),
    n: int = typer.Option(20, min=1, help="How many scenes."),
    seed: int = typer.Option(0, help="Which stream of scenes (scene i is drawn from the seeds [seed, i]; training "
                                       "never draws from these)."),
) -> None:
    """Shapes-world scenes with their questions and evidence masks, as a batch input (items.jsonl)."""
    from .toy.scenes import write_scenes

    if out.exists() and any(out.iterdir()):
        fail(f"--out {out} already holds files; choose another folder")
    typer.echo(f"wrote {write_scenes(out, n, seed)} ({n} scenes with evidence masks)")


@toy_app.command("hallucination")
def toy_hallucination(
    n: int = typer.Option(60, min=1, help="Held-out scenes; each gives a question about a present and an absent shape."),
    method: str = typer.Option("glimpse", help="The method whose maps give the grounding score."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder. Default: the shipped model."),
) -> None:
    """Does the grounding score tell hallucinated colour words (asked about an absent shape) from
    grounded ones? Prints the AUROC with its bootstrap 95% interval."""
    import glimpse

    from .toy.bench import HELDOUT_SEED
    from .toy.hallucination import validate

    try:
        quiet_transformers()
        loaded = glimpse.load(model, device="cpu")
        with progress_bar() as progress:
            result = validate(loaded.model, loaded.processor, n, HELDOUT_SEED, method, progress=progress)
    except GlimpseError as exc:
        fail(str(exc))
    typer.echo(f"{method}: AUROC {result['auroc']:.3f} [{result['low']:.3f}, {result['high']:.3f}] "
               f"(grounded above hallucinated; {result['grounded']} grounded, {result['hallucinated']} hallucinated "
               f"colour words, {result['no_colour_named']} answers without a colour; {n} held-out scenes)")


@toy_app.command("bench")
def toy_bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder. Default: the shipped model."),
    n: int = typer.Option(200, min=1, help="Held-out scenes for accuracy, one greedy generation each."),
    n_localisation: Optional[int] = typer.Option(
        None, min=0, show_default="--n // 5",
        help="Held-out scenes for localisation (--n 1000 gives 200 by default; 0: skip): only their type 1-3 "
             "questions, about 4 in 5, are explained, once per method."),
    methods: str = typer.Option(
        "glimpse,glimpse:token_weighting=confidence,raw_attention",
        help="Comma-separated methods to compare for localisation, each METHOD or METHOD:KEY=VALUE[:KEY=VALUE...] "
             "with method options as in explain's --set."),
) -> None:
    """Held-out exact-match accuracy and localisation (pointing game, energy in mask) of a toy model."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    import glimpse

    from .toy.bench import (
        HELDOUT_SEED,
        accuracy_lines,
        evaluate_accuracy,
        localisation_lines,
        localisation_scenes,
        parse_variants,
    )
    from .toy.localisation import evaluate_localisation, single_object_samples

    @contextmanager
    def bar(description: str, total: int) -> Iterator:
        # On stderr, so stdout holds only the result tables; one bar per stage, so that the accuracy lines are
        # printed between them, as soon as they are known.
        columns = (TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), redirect_stdout=False, redirect_stderr=False,
                      disable=not bars.shown()) as shown:
            task = shown.add_task(description, total=total)
            yield lambda done: shown.update(task, completed=done)

    n_localisation = localisation_scenes(n, n_localisation)
    try:
        variants = parse_variants(methods) if n_localisation else {}
        questions = len(single_object_samples(n_localisation, HELDOUT_SEED)) if n_localisation else 0
        plan = (f"localisation: {questions} type 1-3 questions of {n_localisation} scenes x {len(variants)} methods = "
                f"{questions * len(variants)} explanations (type 4, counting, is not explained)"
                if n_localisation else "localisation: skipped (0 scenes)")
        typer.echo(f"toy bench: accuracy: {n} generations; {plan}", err=True)
        quiet_transformers()
        loaded = glimpse.load(model, device="cpu")
        with bar("accuracy", n) as progress:
            accuracy = evaluate_accuracy(loaded.model, loaded.processor, n=n, seed=HELDOUT_SEED, progress=progress)
        for line in accuracy_lines(accuracy):
            typer.echo(line)
        if n_localisation:
            with bar("localisation", questions * len(variants)) as progress:
                result = evaluate_localisation(loaded.model, loaded.processor, n_localisation, HELDOUT_SEED,
                                               variants=variants, progress=progress)
            for line in localisation_lines(result, n_localisation):
                typer.echo(line)
    except GlimpseError as exc:
        fail(str(exc))


analyze_app = typer.Typer(no_args_is_help=True, help="Analyses of explanations: an HTML report and JSON each.")
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("tokens")
def analyze_tokens(
    explanation: Optional[Path] = typer.Argument(None, help="A saved explanation's folder (glimpse explain --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for tokens.html and tokens.json."),
    batch: Optional[Path] = typer.Option(None, help="Or a batch folder, with --id and --method."),
    item: Optional[str] = typer.Option(None, "--id", help="The item of --batch."),
    method: str = typer.Option("glimpse", help="The method of --batch."),
) -> None:
    """Token dynamics: each answer token's visual and prompt relevance and weight (a plot), its own map
    (a filmstrip), and a table."""
    from .analysis import write_tokens_report
    from .batch import load_explanation
    from .explanation import Explanation

    if (explanation is None) == (batch is None):
        fail("give an explanation folder, or --batch with --id")
    if batch is not None and item is None:
        fail("--batch needs --id: the item to analyse")
    written(lambda: write_tokens_report(Explanation.load(explanation) if batch is None
                                        else load_explanation(batch, item, method), out))


def written(write: Callable[[], list[Path]]) -> None:
    """Run a report's writer and name the files it wrote (or say its error in one line)."""
    try:
        paths = write()
    except GlimpseError as exc:
        fail(str(exc))
    typer.echo("wrote " + " and ".join(str(p) for p in paths))


@analyze_app.command("hallucination")
def analyze_hallucination(
    explanation: Path = typer.Argument(..., help="A saved explanation's folder (glimpse explain --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for hallucination.html and hallucination.json."),
    threshold: float = typer.Option(0.5, help="Flag answer tokens whose relative visual relevance is below this."),
) -> None:
    """How well each answer word is grounded in the image: its relative visual relevance and the
    concentration of its map; weakly grounded words flagged."""
    from .analysis.hallucination import write_hallucination_report
    from .explanation import Explanation

    written(lambda: write_hallucination_report(Explanation.load(explanation), out, threshold=threshold))


@analyze_app.command("misalignment")
def analyze_misalignment(
    batch: Path = typer.Argument(..., help="A batch folder whose items have a mask or box (and optionally objects)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for misalignment.html and misalignment.json."),
    method: str = typer.Option("glimpse", help="The method whose maps are classified."),
    worst: int = typer.Option(12, min=1, help="How many of the least aligned items the gallery shows."),
) -> None:
    """Where each map peaks against the evidence (aligned, right object but diffuse, another object,
    background): the counts, and the least aligned items as a gallery."""
    from .analysis.misalignment import write_misalignment_report

    written(lambda: write_misalignment_report(batch, out, method, worst))


@analyze_app.command("faithfulness")
def analyze_faithfulness(
    explanation: Path = typer.Argument(..., help="A saved explanation's folder (glimpse explain --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for faithfulness.html and faithfulness.json."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="The model the explanation was made with. Default: the one it names "
                                             "(a local folder is named without its path: give it here)."),
    baseline: str = typer.Option("blur", help="What removed pixels become: blur, or mean (the image's mean colour)."),
    step: float = typer.Option(0.1, help="The share of image tokens removed (or revealed) per step."),
    random_orders: int = typer.Option(3, min=0, help="Random orders averaged into the baseline curves."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
) -> None:
    """Faithfulness through the model: the holistic map's deletion and insertion curves against random
    orders, and each answer token's own deletion curve (scored by its log-probability)."""
    from .analysis.faithfulness import write_faithfulness_report
    from .explanation import Explanation

    try:
        saved = Explanation.load(explanation)
        loaded = quiet_load(model or saved.model_id, device, "auto", None, False)
    except GlimpseError as exc:
        fail(str(exc))
    written(lambda: write_faithfulness_report(loaded.model, loaded.processor, saved, out, baseline=baseline, step=step,
                                              random_orders=random_orders))


@analyze_app.command("bias")
def analyze_bias(
    explanation: Optional[Path] = typer.Argument(None, help="A saved explanation's folder (glimpse explain --out)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for bias.html and bias.json."),
    batch: Optional[Path] = typer.Option(None, help="Or a batch folder: the image share of each of its items."),
    method: str = typer.Option("glimpse", help="The method of --batch."),
) -> None:
    """Image against prompt: the share of positive relevance on the image rather than the question,
    for the answer and each answer token (or for each item of a batch, with the mean)."""
    from .analysis import write_batch_bias_report, write_bias_report
    from .explanation import Explanation

    if (explanation is None) == (batch is None):
        fail("give an explanation folder, or --batch")
    written(lambda: write_bias_report(Explanation.load(explanation), out) if batch is None
            else write_batch_bias_report(batch, out, method))


@analyze_app.command("counterfactual")
def analyze_counterfactual(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for counterfactual.html and counterfactual.json."),
    swap: list[str] = typer.Option([], "--swap", metavar="WORD=REPLACEMENT",
                                   help="A word of the question and what replaces it, repeatable: --swap red=blue."),
    image: Optional[Path] = typer.Option(None, "--image", "-i", help="Image file, with --question."),
    question: Optional[str] = typer.Option(None, "--question", "-q", help="The question to ask about the image."),
    input: Optional[Path] = typer.Option(None, "--input",
                                         help="Or a batch input (docs/batch-format.md): every item whose question "
                                              "contains a swap's word."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N items of --input."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Hub id or local model folder. Default: the shipped shapes-world model."),
    method: str = typer.Option("glimpse", help="Explanation method (see `glimpse methods`)."),
    option: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="A method option, as for explain."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
) -> None:
    """Counterfactual prompts: explain the question and its copy with one word swapped, and compare
    the answers and the maps (CC, peak, image share), summarised over the swaps."""
    from .analysis.bias import (
        contains_word,
        counterfactual,
        counterfactual_items,
        counterfactual_summary,
        parse_swap,
        summary_text,
        write_counterfactual_report,
    )
    from .batch import read_items
    from .images import check_image

    if input is not None and (image is not None or question is not None):
        fail("give --image and --question, or --input, not both")
    if input is None and (image is None or question is None):
        fail("give --image and --question (or --input: a batch input)")
    try:
        # Check what is cheap to check before loading a model that may take minutes.
        swaps = [parse_swap(text) for text in swap]
        if not swaps:
            fail("give at least one --swap WORD=REPLACEMENT (e.g. --swap red=blue)")
        options = method_options(method, {}, option)
        if image is not None:
            check_image(image)
        items = [] if input is None else read_items(input)[:limit]
        questions = [question] if input is None else [item.question for item in items]
        if not any(contains_word(text, word) for text in questions for word, _ in swaps):
            fail("no swap's word occurs in " + ("the question" if input is None else f"the questions of {input}"))
        with shown_as_lines(), progress_bar() as progress:
            loaded = quiet_load(model, device, "auto", None, False)
            results = ([counterfactual(loaded.model, loaded.processor, image, question, swaps, method, **options)]
                       if input is None else
                       counterfactual_items(loaded.model, loaded.processor, items, swaps, method, progress, **options))
    except GlimpseError as exc:
        fail(str(exc))
    for s in results[0]["swaps"] if input is None else []:  # a batch's swaps are in the report
        typer.echo(f"{s['word']} -> {s['replacement']}: {s['answer']!r} (answer "
                   f"{'changed' if s['answer_changed'] else 'unchanged'}), map CC {s['map_cc']:.2f}, peak "
                   f"{'moved' if s['peak_moved'] else 'kept'}")
    typer.echo(summary_text(counterfactual_summary(results)))
    written(lambda: write_counterfactual_report(results, out))


@app.command()
def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Hub id or local model folder. Default: the shipped shapes-world model."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(7860, min=1, max=65535, help="Port to listen on."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:1, ... (auto: CUDA when available)."),
) -> None:
    """The web app (Gradio): upload an image or draw a shapes-world scene, ask, and look at each
    method's maps, token by token, side by side. Needs pip install 'glimpse-lvlm[ui]'."""
    from .serve import install_hint
    from .serve import serve as run_app

    try:
        import gradio  # noqa: F401
    except ImportError:
        fail(install_hint())
    try:
        quiet_transformers()
        run_app(model, host, port, device)
    except GlimpseError as exc:
        fail(str(exc))


@app.command()
def methods() -> None:
    """List the explanation methods: what each does, its paper, what it explains, and its options
    with their defaults (pass them to explain as --set KEY=VALUE)."""
    from .methods import list_methods, option_defaults

    for name, cls in list_methods().items():
        typer.echo(f"{name}{'  (approximation)' if cls.approximate else ''}\n  {cls.summary}\n  paper: {cls.paper}"
                   f"\n  explains: {cls.explains}; answer tokens ranked by {cls.token_ranking}")
        for option, default in option_defaults(cls).items():
            typer.echo(f"  --set {option}={json.dumps(default)}: {cls.options[option]}")
        typer.echo("")


def main() -> None:
    """Entry point: a GlimpseError escaping a command, and a wrong command line (an unknown option, a
    value out of range), become one line `error: ...` and exit 2, never a traceback."""
    from typer.exceptions import Abort, TyperException

    try:
        code = app(standalone_mode=False)
    except GlimpseError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except TyperException as exc:  # click's usage errors
        context, message = getattr(exc, "ctx", None), exc.format_message()
        hint = f" (see: {context.command_path} --help)" if context is not None else ""
        if message:  # none where the help was shown instead (a bare `glimpse`)
            typer.echo(f"error: {message}{hint}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
