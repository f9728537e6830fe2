"""Progress bars (issue 17): generation, backward passes, integrated gradients and occlusion draw a bar on
stderr once their work has taken `progress.DELAY` seconds; `quiet()`, GLIMPSE_QUIET=1 and `glimpse --quiet`
turn them off; `glimpse --version`. The bars never change a result."""

import re

import numpy as np
import pytest

import glimpse
from cli_runs import run, run_process
from glimpse import progress
from tiny_models import rand_image

QUESTION = "what color is the object?"
ANSWER = " a red circle"


@pytest.fixture
def bars(monkeypatch):
    """Every bar made during the test, drawn at once (no delay), as (description, n, total, disabled) at the end."""
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.delenv("GLIMPSE_QUIET", raising=False)
    made = []
    real = progress.steps

    def recording(total, description):
        made.append(real(total, description))
        return made[-1]
    monkeypatch.setattr(progress, "steps", recording)
    return made


def seen(made, description):
    return [(bar.n, bar.total) for bar in made if bar.desc == description]


def drawn(text, description, n, total):
    """Whether stderr shows the bar `description` at n/total (tqdm's "desc: pct%|bar| n/total [...]")."""
    return re.search(rf"{re.escape(description)}: +\d+%\|[^|\n]*\| {n}/{total} ", text) is not None


def test_quick_work_prints_nothing(capsys, monkeypatch):
    monkeypatch.delenv("GLIMPSE_QUIET", raising=False)
    with progress.steps(3, "quick") as bar:
        assert not bar.disable
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_a_slow_task_draws_its_bar(capsys, monkeypatch):
    monkeypatch.delenv("GLIMPSE_QUIET", raising=False)
    clock = iter(range(0, 1000, 1))  # every read of the clock is a second later
    monkeypatch.setattr("tqdm.std.time", lambda: float(next(clock)))
    with progress.steps(3, "slow work") as bar:
        for _ in range(3):
            bar.update(1)
    assert drawn(capsys.readouterr().err, "slow work", 3, 3)


@pytest.mark.every_path
def test_backward_passes_advance_one_step_per_answer_token(tiny_llava, bars, capsys):
    model, processor = tiny_llava
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER)
    n = len(result.answer_token_ids)
    assert n >= 2 and seen(bars, "backward passes") == [(n, n)]
    assert drawn(capsys.readouterr().err, "backward passes", n, n)
    with progress.quiet():
        quiet = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER)
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(result.token_visual, quiet.token_visual)
    np.testing.assert_array_equal(result.token_prompt, quiet.token_prompt)


def test_generation_advances_a_bar_per_new_token(tiny_llava, bars, capsys):
    model, processor = tiny_llava
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, max_new_tokens=4)
    [(n, total)] = seen(bars, "generating")  # of max_new_tokens steps, ended at 100% when the answer stopped sooner
    assert n == total and len(result.answer_token_ids) <= n <= 4  # a stop token generated is a step too
    err = capsys.readouterr().err
    assert drawn(err, "generating", 0, 4) and drawn(err, "generating", n, n)
    with progress.quiet():
        quiet = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, max_new_tokens=4)
    assert capsys.readouterr().err == "" and quiet.answer_token_ids == result.answer_token_ids
    np.testing.assert_array_equal(result.token_visual, quiet.token_visual)


def test_integrated_gradients_advance_a_step_per_chunk_and_token(tiny_llava, bars, capsys):
    model, processor = tiny_llava
    options = dict(method="integrated_gradients", steps=4, batch_size=2)
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER, **options)
    n = len(result.answer_token_ids)
    assert seen(bars, "integrated gradients") == [(2 * n, 2 * n)] * 2  # pixels, then prompt embeddings
    assert drawn(capsys.readouterr().err, "integrated gradients", 2 * n, 2 * n)
    with progress.quiet():
        quiet = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER, **options)
    np.testing.assert_array_equal(result.token_visual, quiet.token_visual)
    np.testing.assert_array_equal(result.token_prompt, quiet.token_prompt)


def test_occlusion_advances_a_step_per_batch(tiny_llava, bars, capsys):
    model, processor = tiny_llava
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER, method="occlusion",
                             batch_size=4)
    regions, prompt = result.token_visual.shape[1], result.token_prompt.shape[1]
    batches = [-(-regions // 4), -(-prompt // 4)]
    assert seen(bars, "occlusion") == [(b, b) for b in batches]
    assert drawn(capsys.readouterr().err, "occlusion", batches[0], batches[0])
    with progress.quiet():
        quiet = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER, method="occlusion",
                                batch_size=4)
    np.testing.assert_array_equal(result.token_visual, quiet.token_visual)


def test_quiet_and_the_environment_turn_bars_off(tiny_llava, bars, capsys, monkeypatch):
    model, processor = tiny_llava
    with progress.quiet():
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER)
    assert progress.shown() and capsys.readouterr().err == ""
    monkeypatch.setenv("GLIMPSE_QUIET", "1")
    glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=ANSWER)
    assert not progress.shown() and capsys.readouterr().err == ""
    assert bars and all(bar.disable for bar in bars)
    monkeypatch.setenv("GLIMPSE_QUIET", "0")
    token = progress.set_shown(False)
    assert not progress.shown()
    progress.reset(token)
    assert progress.shown()


def test_the_cli_progress_bar_respects_quiet(capsys, monkeypatch):
    from glimpse.cli import progress_bar

    monkeypatch.delenv("GLIMPSE_QUIET", raising=False)
    with progress.quiet(), progress_bar("items") as advance:
        advance(1, 2)
    assert capsys.readouterr().err == ""
    with progress_bar("items") as advance:
        advance(2, 2)
    assert drawn(capsys.readouterr().err, "items", 2, 2)


def test_version(tmp_path):
    done = run_process("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"glimpse {glimpse.__version__}"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from glimpse.toy.world import make_sample

    path = tmp_path_factory.mktemp("progress") / "scene.png"
    make_sample(3).image.save(path)
    return path


def test_quiet_command_prints_no_bar(scene, tmp_path):
    done = run_process("--quiet", "explain", "-i", str(scene), "-p", "what color is the circle?", "-o", str(tmp_path / "o"),
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "answer:" in done.stdout
    assert not re.search(r"generating|backward passes|\d+/\d+ \[", done.stderr), done.stderr


def test_quiet_holds_for_its_command_only(scene, tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0)
    monkeypatch.delenv("GLIMPSE_QUIET", raising=False)
    shown = run("explain", "-i", str(scene), "-p", "what color is the circle?", "-o", str(tmp_path / "a"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "generating" in shown.stderr and re.search(r"backward passes: +100%", shown.stderr), shown.stderr
    quiet = run("--quiet", "explain", "-i", str(scene), "-p", "what color is the circle?", "-o", str(tmp_path / "b"),
                cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "generating" not in quiet.stderr and "backward passes" not in quiet.stderr, quiet.stderr
    assert progress.shown()  # --quiet ended with its command
