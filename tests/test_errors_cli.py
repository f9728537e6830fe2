"""docs/errors.md through the command line: each bad input is one line, `error: ...`, exit 2, no traceback."""

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cli_runs import run, run_process
from glimpse.toy import world

QUESTION = "what color is the circle?"


def png_bomb(path):
    """A PNG header declaring 40000 x 40000 pixels and nothing more (69 bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    world.make_sample(11).image.save(folder / "scene.png")
    png_bomb(folder / "bomb.png")
    return folder


def one_line_error(result, message):
    assert result.returncode == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["-i", "bomb.png", "-p", QUESTION], "declares more pixels than is safe to decode"),
    (["-i", "scene.png", "-p", QUESTION, "--set", "head_lambda=NaN"], "must be a finite number"),
    (["-i", "scene.png", "-p", QUESTION, "--set", "exclude_sinks=no"], "must be bool, got 'no'"),
    (["-i", "scene.png", "-p", "<image> " + QUESTION], "image placeholder"),
    (["-i", "scene.png", "-p", "what color is the circle " * 400 + "?"], "context length of 512"),
    (["-i", "scene.png", "-p", QUESTION, "-a", "zzz qqq"], "zzz"),
    (["-i", "scene.png", "-p", QUESTION, "--device", "gpu3"], "gpu3"),
])
def test_bad_input_to_explain(workdir, args, message):
    one_line_error(run("explain", *args, "-o", "out", cwd=workdir), message)
    assert not (workdir / "out").exists()  # nothing half-written


def test_a_model_folder_without_weights(workdir, tiny_llava_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llava_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    one_line_error(run("explain", "-m", str(folder), "-i", "scene.png", "-p", QUESTION, "-o", str(tmp_path / "o"),
                       cwd=workdir), "weights")


def test_a_wide_grey_image_is_explained_with_a_warning_shown_once_and_noted(workdir, tmp_path):
    Image.fromarray(np.asarray(world.make_sample(11).image.convert("L"), np.uint16) * 200).save(tmp_path / "deep.png")
    # In a process of its own, as a user runs it; two methods each read (and convert) the image.
    result = run_process("compare", "-i", str(tmp_path / "deep.png"), "-q", QUESTION, "-o", str(tmp_path / "o"),
                         "--methods", "glimpse,raw_attention", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("I;16 image was converted to 8-bit RGB") == 1, result.stderr
    assert result.stderr.count("\n") == result.stderr.count("warning: "), result.stderr  # each a one-line warning
    for method in ("glimpse", "raw_attention"):
        notes = json.loads((tmp_path / "o" / method / "explanation.json").read_text())["notes"]
        assert any("I;16 image was converted" in line for line in notes), notes


def test_a_tampered_saved_explanation(workdir, tmp_path):
    done = run("explain", "-i", "scene.png", "-p", QUESTION, "-o", str(tmp_path / "saved"), cwd=workdir)
    assert done.returncode == 0, done.output
    document = json.loads((tmp_path / "saved" / "explanation.json").read_text())
    document["images"][0]["file"] = "../../etc/passwd"
    (tmp_path / "saved" / "explanation.json").write_text(json.dumps(document))
    one_line_error(run("analyze", "tokens", str(tmp_path / "saved"), "--out", str(tmp_path / "r"), cwd=workdir),
                   "images[0].file")
