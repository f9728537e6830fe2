"""Batch inputs for tests: shapes-world scenes (`glimpse.toy.scenes`) and their rows, to edit."""

from __future__ import annotations

import json
from pathlib import Path

SEED = 5


def write_scenes(folder: Path, n: int) -> list[dict]:
    """n shapes-world scenes in `folder` (folder/items.jsonl); returns the rows of items.jsonl."""
    from glimpse.toy.scenes import write_scenes as write

    path = write(folder, n, SEED)
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
