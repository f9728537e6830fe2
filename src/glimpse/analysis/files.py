"""Where an analysis goes: its page and its JSON document, side by side in one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..saved import json_text


def write_report(folder: str | Path, name: str, page: str, document: Any) -> list[Path]:
    """`name`.html and `name`.json (strict JSON: a non-finite number becomes null) in `folder`, made
    with its parents where absent; the two paths."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    paths = [target / f"{name}.html", target / f"{name}.json"]
    paths[0].write_text(page, encoding="utf-8")
    paths[1].write_text(json_text(document), encoding="utf-8")
    return paths
