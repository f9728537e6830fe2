"""Batch inputs for tests: shapes-world scenes written as images, masks and an items file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_scenes(folder: Path, n: int, first: int = 0) -> list[dict]:
    """Scenes first..first+n-1 of the shapes world as scene<i>.png and mask<i>.png in `folder`, and
    their rows (id, image, question, mask; paths relative to `folder`) in folder/items.jsonl."""
    from glimpse.toy import world

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(first, first + n):
        sample = world.make_sample(i)
        sample.image.save(folder / f"scene{i}.png")
        Image.fromarray((sample.mask * 255).astype(np.uint8)).save(folder / f"mask{i}.png")
        rows.append({"id": f"scene-{i}", "image": f"scene{i}.png", "question": sample.question, "mask": f"mask{i}.png"})
    write_jsonl(folder / "items.jsonl", rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
