"""Output folders: checked writable before any work, run folders taken exclusively, every folder written atomically."""

import errno
import os
import threading
from pathlib import Path

import pytest

import glimpse
from cli_runs import run
from glimpse import Explanation
from tiny_models import rand_image

QUESTION = "what color is the object?"
SAVED = {"explanation.json", "arrays.safetensors", "image_0.png", "overlay.png", "tokens.png", "report.html"}


@pytest.fixture(scope="module")
def explanation(tiny_llava):
    model, processor = tiny_llava
    return glimpse.explain(model, processor, rand_image(90, 60, seed=3), QUESTION, answer=" a red circle")


@pytest.fixture
def no_model(monkeypatch):
    """glimpse.load fails the test if a command gets as far as loading the model."""
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(glimpse, "load", load)
    return calls


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "img.png"
    rand_image(90, 60, seed=1).save(path)
    return path


@pytest.mark.parametrize("command", ["explain", "demo"])
@pytest.mark.parametrize("where", ["inside", "itself"])
def test_a_read_only_output_folder_fails_before_the_model_is_loaded(read_only, no_model, image, tmp_path, command,
                                                                      where):
    out = read_only / "out" if where == "inside" else read_only
    args = ["explain", "-i", str(image), "-p", QUESTION] if command == "explain" else ["demo"]
    result = run(*args, "-o", str(out), cwd=tmp_path)
    assert no_model == [] and result.exit_code == 2, (result.exception, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not writable" in lines[0] and str(read_only) in lines[0]
    assert "Traceback" not in result.output and list(read_only.iterdir()) == []


@pytest.mark.parametrize("command", ["explain", "demo"])
def test_the_default_folder_in_a_read_only_directory_fails_before_the_model_is_loaded(read_only, no_model, image,
                                                                                        command):
    args = ["explain", "-i", str(image), "-p", QUESTION] if command == "explain" else ["demo"]
    result = run(*args, cwd=read_only)
    assert no_model == [] and result.exit_code == 2, (result.exception, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "glimpse-out" in lines[0] and "Traceback" not in result.output


def test_an_output_path_under_a_file_is_one_line(no_model, image, tmp_path):
    (tmp_path / "file").write_text("x")
    result = run("explain", "-i", str(image), "-p", QUESTION, "-o", str(tmp_path / "file" / "out"), cwd=tmp_path)
    assert no_model == [] and result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "not a folder" in result.stderr


def test_concurrent_runs_take_different_run_folders(tmp_path, monkeypatch):
    from glimpse.cli import new_output_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "glimpse-out").mkdir()
    (tmp_path / "glimpse-out" / ".run-001.tmp-0badc0de").mkdir()  # a killed run's leftover blocks nothing
    start, folders = threading.Barrier(8), []

    def take():
        start.wait()
        folders.append(new_output_folder(None, False))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(str(f) for f in folders) == [f"glimpse-out/run-{n:03d}" for n in range(1, 9)]
    assert all(f.is_dir() for f in folders)


def test_a_failed_run_gives_its_run_folder_back(no_model, image, tmp_path):
    (tmp_path / "glimpse-out").mkdir()
    bad = run("explain", "-i", str(tmp_path / "missing.png"), "-p", QUESTION, cwd=tmp_path)
    assert bad.exit_code == 2 and "image file not found" in bad.stderr
    assert list((tmp_path / "glimpse-out").iterdir()) == []


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
@pytest.mark.parametrize("writer", ["to_html", "to_png"])
def test_an_interrupted_save_leaves_neither_the_folder_nor_a_temporary_one(explanation, tmp_path, monkeypatch, writer,
                                                                           failure):
    def broken(*args, **kwargs):
        raise failure("interrupted")

    monkeypatch.setattr(Explanation, writer, broken)
    with pytest.raises(glimpse.OutputError if failure is OSError else failure):  # a write failing: one clear error
        explanation.save(tmp_path / "parent" / "e")
    assert list((tmp_path / "parent").iterdir()) == []


def test_an_interrupted_save_over_earlier_files_keeps_them(explanation, tmp_path, monkeypatch):
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "explanation.json").write_text("earlier")
    (folder / "mine.txt").write_text("precious")
    monkeypatch.setattr(Explanation, "to_html", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        explanation.save(folder, overwrite=True)
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"explanation.json": "earlier", "mine.txt": "precious"}
    assert leftovers(tmp_path) == [] and leftovers(folder) == []


def test_save_into_an_absent_an_empty_and_a_full_folder(explanation, tmp_path):
    assert explanation.save(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert {p.name for p in (tmp_path / "a" / "b").iterdir()} == SAVED
    (tmp_path / "empty").mkdir()
    explanation.save(tmp_path / "empty")
    assert {p.name for p in (tmp_path / "empty").iterdir()} == SAVED
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("precious")
    (full / "explanation.json").write_text("earlier")
    with pytest.raises(glimpse.OutputError, match="already holds files: choose another folder, or overwrite=True"):
        explanation.save(full)
    assert (full / "explanation.json").read_text() == "earlier"
    explanation.save(full, overwrite=True)  # its own files replaced, the others kept
    assert {p.name for p in full.iterdir()} == SAVED | {"mine.txt"} and (full / "mine.txt").read_text() == "precious"
    assert Explanation.load(full).answer == explanation.answer
    assert leftovers(tmp_path) == [] and leftovers(full) == []


def test_a_comparison_is_not_saved_over_earlier_files(explanation, tmp_path):
    from glimpse.compare import Comparison

    comparison = Comparison(question=explanation.question, answer=explanation.answer, answer_generated=False,
                            methods=["glimpse"], explanations={"glimpse": explanation}, errors={})
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("precious")
    with pytest.raises(glimpse.OutputError, match="already holds files"):
        comparison.save(tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["mine.txt"]
    comparison.save(tmp_path / "c", overwrite=True)
    assert {"compare.html", "compare.png", "glimpse", "mine.txt"} <= {p.name for p in (tmp_path / "c").iterdir()}


def test_an_unwritable_folder_is_one_output_error(explanation, read_only):
    with pytest.raises(glimpse.OutputError, match=r"cannot write .*read-only/e: Permission denied; choose another"):
        explanation.save(read_only / "e")


def test_a_stale_temporary_folder_does_not_block_the_next_save(explanation, tmp_path):
    stale = tmp_path / ".e.tmp-0badc0de"
    stale.mkdir()
    (stale / "arrays.safetensors").write_bytes(b"half")
    explanation.save(tmp_path / "e", figures=False)
    assert Explanation.load(tmp_path / "e").answer == explanation.answer


def test_save_into_a_folder_whose_parent_takes_no_new_entries(explanation, tmp_path, monkeypatch):
    """The temporary folder cannot sit beside the folder: it is made inside, and the files moved out of it."""
    parent = tmp_path / "parent"
    (parent / "out").mkdir(parents=True)
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).absolute().parent == parent:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    explanation.save(parent / "out")
    assert {p.name for p in (parent / "out").iterdir()} == SAVED and [p.name for p in parent.iterdir()] == ["out"]


def test_demo_writes_its_folder_at_once(tmp_path, monkeypatch):
    """The demo's answer-word picture is written after the explanation: an interruption there leaves nothing."""
    to_png = Explanation.to_png

    def broken(self, path=None, image=0, token=None):
        if path is not None and Path(path).name == "answer-word.png":
            raise OSError("interrupted")
        return to_png(self, path, image, token)

    monkeypatch.setattr(Explanation, "to_png", broken)
    result = run("demo", "--seed", "1", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert result.exit_code != 0 and "interrupted" in str(result.exception) + result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
