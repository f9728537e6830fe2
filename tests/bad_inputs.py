"""Bad inputs of every class in docs/errors.md, written as files a user would hand the tool."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glimpse.toy import world


def png_bomb(path: Path) -> None:
    """A PNG header declaring 40000 x 40000 pixels and nothing more (69 bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def write_images(folder: Path) -> None:
    scene = world.make_sample(11).image
    scene.save(folder / "scene.png")
    png_bomb(folder / "bomb.png")
    (folder / "notes.png").write_text("not a picture")
    (folder / "cut.png").write_bytes((folder / "scene.png").read_bytes()[:300])  # truncated
    grey = np.asarray(scene.convert("L"), np.uint16) * 200
    Image.fromarray(grey).save(folder / "deep.png")  # 16-bit grey
    scene.save(folder / "frames.gif", save_all=True, append_images=[scene.rotate(90)])
    scene.resize((scene.width * 4, scene.height)).save(folder / "wide.png")  # LLaVA's processor keeps its centre


def write_model_folders(folder: Path, tiny_dir: Path) -> None:
    shutil.copytree(tiny_dir, folder / "no-weights")
    (folder / "no-weights" / "model.safetensors").unlink()
    shutil.copytree(tiny_dir, folder / "deeper-config")
    config = json.loads((folder / "deeper-config" / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] += 1  # the weights lack the extra layer
    (folder / "deeper-config" / "config.json").write_text(json.dumps(config))


def tamper(saved: Path, folder: Path) -> None:
    """Copies of a saved explanation: one with invalid JSON, one naming a file outside its folder."""
    shutil.copytree(saved, folder / "not-json")
    (folder / "not-json" / "explanation.json").write_text("{not json")
    shutil.copytree(saved, folder / "outside")
    document = json.loads((saved / "explanation.json").read_text())
    document["images"][0]["file"] = "../../etc/passwd"
    (folder / "outside" / "explanation.json").write_text(json.dumps(document))


def write_batch_inputs(folder: Path) -> None:
    rows = [{"id": "one", "image": "scene.png", "question": "what color is the circle?"},
            {"id": "one", "image": "scene.png", "question": "what shape is it?"}]  # a repeated id
    (folder / "repeated.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (folder / "good.jsonl").write_text(json.dumps(rows[0]) + "\n")


class _Planted:
    """Unpickling this runs code: what a crafted checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.mkdir, (self.target,))


def write_crafted_checkpoint(folder: Path) -> Path:
    """A training folder whose checkpoint creates `planted` when unpickled; returns that path."""
    (folder / "crafted").mkdir()
    torch.save({"config": _Planted(folder / "planted")}, folder / "crafted" / "ckpt.pt")
    return folder / "planted"
