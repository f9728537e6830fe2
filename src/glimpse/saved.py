"""Checks of a saved explanation's document and arrays, run on load (docs/explanation-format.md,
"Loading checks"): a damaged or tampered folder fails there, as one ExplanationError naming the
field, rather than later (a map drawn from too few scores, a word index past the words) or not at
all (a file outside the folder read and, by a later save, copied)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import images as image_files
from .errors import ExplanationError
from .layout import AXES, SEQUENCE

SCHEMA_VERSION = 2

_COMMON = {
    "glimpse_version": str, "model_id": str, "method": str, "params": dict, "approximate": bool, "question": str,
    "question_located": bool, "prompt_words": [str], "word_of_token": [int], "answer": str, "answer_tokens": [str],
    "answer_token_ids": [int], "answer_generated": bool, "layers": [int], "images": list, "arrays": str, "extra": dict,
}
_VERSION_2 = {"explained": str, "ranking_by": str, "details": dict, "notes": [str], "cost": dict}
_KINDS = {str: "a string", bool: "true or false", int: "an integer", float: "a number", dict: "an object",
          list: "a list"}


def damaged(source: str | Path, name: str, problem: str) -> ExplanationError:
    return ExplanationError(f"damaged explanation in {source}: `{name}` {problem}")


def _described(value: Any) -> str:
    """A JSON value as a message shows it: `"2" (a string)`, `a list`, `null`."""
    if value is None:
        return "null"
    kind = next((text for kind, text in _KINDS.items() if _is(value, kind)), type(value).__name__)
    if not isinstance(value, (str, int, float)):
        return kind
    shown = json.dumps(value, ensure_ascii=False)
    return f"{shown if len(shown) <= 40 else shown[:37] + '...'} ({kind})"


def _is(value: Any, kind: type) -> bool:
    """JSON's types: a boolean is no number (Python's bool is an int)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _field(container: dict, key: str, kind: Any, source: str | Path, name: str | None = None) -> Any:
    """container[key], checked to be of `kind` (a type, or [type]: a list of them)."""
    name = name or key
    if key not in container:
        raise damaged(source, name, "is missing")
    value = container[key]
    of = kind[0] if isinstance(kind, list) else None
    if not _is(value, list if of else kind):
        raise damaged(source, name, f"is {_described(value)}, not {_KINDS[list if of else kind]}"
                                     + (f" of {_KINDS[of].split(' ', 1)[1]}s" if of else ""))
    for i, item in enumerate(value if of else ()):
        if not _is(item, of):
            raise damaged(source, f"{name}[{i}]", f"is {_described(item)}, not {_KINDS[of]}")
    return value


def check_document(doc: Any, source: str | Path = "the given document") -> tuple[int, int, int]:
    """Check a saved explanation's document (`Explanation.to_dict`, schema version 1 or 2): every field
    present with its type, the indices in range, the layouts well formed. Returns its sizes (T answer
    tokens, P question tokens, V image tokens), which the arrays must match. Raises ExplanationError."""
    if not isinstance(doc, dict):
        raise damaged(source, "explanation.json", f"is {_described(doc)}, not an object")
    version = doc.get("schema_version")
    if doc.get("schema") != "glimpse.explanation" or not _is(version, int) or not 1 <= version <= SCHEMA_VERSION:
        key = "schema" if doc.get("schema") != "glimpse.explanation" else "schema_version"
        raise ExplanationError(f"{source} is not a glimpse explanation of schema version 1 to {SCHEMA_VERSION} "
                               f"(`{key}` is {_described(doc.get(key))})")
    for key, kind in {**_COMMON, **(_VERSION_2 if version == 2 else {})}.items():
        _field(doc, key, kind, source)
    if doc.get("model_revision") is not None:  # optional: files made before it was recorded lack it
        _field(doc, "model_revision", str, source)
    if version == 2:
        for name, meaning in doc["details"].items():
            if not isinstance(meaning, str):
                raise damaged(source, f"details.{name}", f"is {_described(meaning)}, not a string (the value's meaning)")
    tokens = len(doc["answer_tokens"])
    if len(doc["answer_token_ids"]) != tokens:
        raise damaged(source, "answer_token_ids", f"has {len(doc['answer_token_ids'])} ids for {tokens} answer_tokens")
    for i, word in enumerate(doc["word_of_token"]):
        if not 0 <= word < len(doc["prompt_words"]):
            raise damaged(source, f"word_of_token[{i}]", f"is {word}, not the index of one of the "
                                                          f"{len(doc['prompt_words'])} prompt_words")
    image_tokens = 0
    for i, item in enumerate(doc["images"]):
        name = f"images[{i}]"
        if not isinstance(item, dict):
            raise damaged(source, name, f"is {_described(item)}, not an object")
        _field(item, "file", str, source, f"{name}.file")
        image_tokens += _check_layout(_field(item, "layout", dict, source, f"{name}.layout"), source, f"{name}.layout")
    return tokens, len(doc["word_of_token"]), image_tokens


def _check_layout(layout: dict, source: str | Path, name: str) -> int:
    """Check one image's layout (`ImageLayout.to_dict`); returns its number of image tokens."""
    for side in ("width", "height"):
        if _field(layout, side, int, source, f"{name}.{side}") < 1:
            raise damaged(source, f"{name}.{side}", f"is {layout[side]}, not a size in pixels")
    if layout["width"] * layout["height"] > image_files.MAX_PIXELS:
        raise damaged(source, name, f"is {layout['width']} x {layout['height']} pixels, more than glimpse takes "
                                     f"({image_files.MAX_PIXELS:,}; raise glimpse.images.MAX_PIXELS to read it)")
    if layout.get("positions_axis", SEQUENCE) not in AXES:
        raise damaged(source, f"{name}.positions_axis", f"is {_described(layout['positions_axis'])}, not one of "
                                                         f"{', '.join(AXES)}")
    count = 0
    for j, tile in enumerate(_field(layout, "tiles", list, source, f"{name}.tiles")):
        where = f"{name}.tiles[{j}]"
        if not isinstance(tile, dict):
            raise damaged(source, where, f"is {_described(tile)}, not an object")
        for side in ("rows", "cols"):
            if _field(tile, side, int, source, f"{where}.{side}") < 1:
                raise damaged(source, f"{where}.{side}", f"is {tile[side]}, not a grid size")
        box = _field(tile, "box", [float], source, f"{where}.box")
        if len(box) != 4 or not all(map(math.isfinite, box)) or not (box[0] < box[2] and box[1] < box[3]):
            raise damaged(source, f"{where}.box", f"is {box}, not [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        positions = _field(tile, "positions", [int], source, f"{where}.positions")
        if len(positions) != tile["rows"] * tile["cols"]:
            raise damaged(source, f"{where}.positions", f"has {len(positions)} positions for a "
                                                         f"{tile['rows']} x {tile['cols']} grid")
        for k, position in enumerate(positions):
            if position < 0:
                raise damaged(source, f"{where}.positions[{k}]", f"is {position}, not a token index")
        count += len(positions)
    return count


def inside_folder(folder: Path, name: str, field_name: str) -> Path:
    """The file `name` of a saved folder: refused unless it resolves (links followed) inside the folder."""
    try:
        root, path = folder.resolve(), (folder / name).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise damaged(folder, field_name, f"is {name!r}, not a usable file name ({exc})") from None
    if not path.is_relative_to(root):
        raise damaged(folder, field_name, f"is {name!r}, a file outside the explanation's folder")
    if not path.is_file():
        raise damaged(folder, field_name, f"is {name!r}, which is not a file in the folder")
    return path


class CheckedArrays:
    """A saved explanation's arrays, each checked when taken: present, float32, of its expected shape."""

    def __init__(self, arrays: dict[str, np.ndarray], sizes: tuple[int, int, int], source: str | Path) -> None:
        if not isinstance(arrays, dict):
            raise damaged(source, "arrays", f"holds {type(arrays).__name__}, not named arrays")
        self.arrays, self.source = arrays, source
        tokens, prompt, image = sizes
        self.shapes = {"token_visual": (tokens, image), "visual": (image,), "token_prompt": (tokens, prompt),
                       "prompt": (prompt,), "token_weights": (tokens,), "probs": (tokens,), "ranking": (tokens,)}
        self.letters = {"token_visual": "TV", "visual": "V", "token_prompt": "TP", "prompt": "P"}
        self.sizes = {"T": f"T = {tokens} answer_tokens", "P": f"P = {prompt} entries of word_of_token",
                      "V": f"V = {image} positions in the images' layouts"}

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def get(self, name: str) -> np.ndarray:
        """The float32 array `name`, of any shape."""
        if name not in self.arrays:
            raise damaged(self.source, name, "is missing from the arrays file")
        value = self.arrays[name]
        if not isinstance(value, np.ndarray) or value.dtype != np.float32:
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise damaged(self.source, name, f"is an array of {kind}, not float32")
        return value

    def core(self, name: str, like: str | None = None) -> np.ndarray:
        """The array `name`, of the shape of the core array `like` (itself by default)."""
        value, like = self.get(name), like or name
        expected = self.shapes[like]
        if value.shape != expected:
            letters = self.letters.get(like, "T")
            raise damaged(self.source, name, f"has shape {value.shape}, not {expected}: [{', '.join(letters)}] with "
                                              + ", ".join(self.sizes[letter] for letter in letters))
        return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """`value` as strict JSON: a NaN or infinite number (which json.dumps would write as a bare `NaN`,
    invalid JSON that other readers refuse) becomes null."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value.item() if isinstance(value, np.generic) else value
