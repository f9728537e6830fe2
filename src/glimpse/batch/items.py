"""The items of a batch run, read from JSONL, CSV, Parquet, a folder of images with a questions
file, or a Hugging Face `datasets` dataset saved to disk (docs/batch-format.md).

Every row names an `id` (or `question_id`; in a folder's questions file it may be left out, the
image's path naming the row), one image (`image`: a path) or several (`images`: a list
of paths), a `question`, and optionally an `answer` to explain and ground truth on the first image:
`mask` (a path to an image whose non-zero pixels are the evidence) or `box` ([x0, y0, x1, y1] in
pixels), and `fixations` (a path to a grey-level image of human fixations: fixated pixels non-zero,
or fixation counts); `attention_map` (a path to a continuous human attention map, e.g. VQA-HAT's);
`question_fixations` (human gaze on the question: one non-negative number per whitespace-separated
word, e.g. VQA-MHUG's fixation durations); `objects` (a path to a mask of every object in the first image,
which tells "another object" from background in `glimpse analyze misalignment`); and
`expected_answer`, the right answer, for accuracy (the model's own answer is explained all the
same). Paths are resolved relative to the input file (a folder input: to the folder). A malformed
row is refused with its line (or row) number before anything runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import BatchError

QUESTION_FILES = ("questions.jsonl", "questions.csv", "questions.parquet")
# A folder saved by `datasets.Dataset.save_to_disk` (one split) or `DatasetDict.save_to_disk`.
DATASET_MARKERS = ("state.json", "dataset_dict.json")
# Errors listed before the rest are counted only.
SHOWN_ERRORS = 10


@dataclass
class Item:
    """One question about one or more images. `images` are absolute paths, or images held in memory
    (a `datasets` Image column); `where` names the row in messages ("items.jsonl line 3")."""

    id: str
    images: list[Path | Image.Image]
    question: str
    answer: str | None = None
    mask: Path | None = None
    box: tuple[float, float, float, float] | None = None
    fixations: Path | None = None
    attention_map: Path | None = None
    question_fixations: tuple[float, ...] | None = None
    objects: Path | None = None
    expected_answer: str | None = None
    ordinal: int = 0
    where: str = ""

    def image_sources(self) -> list[str]:
        """What the record says each image was: its path, or "<in memory: row ...>"."""
        return [str(x) if isinstance(x, Path) else f"<in memory: {self.where}>" for x in self.images]


def read_items(source: str | Path) -> list[Item]:
    """Every item of `source` in input order; a BatchError lists the malformed rows."""
    path = Path(source)
    if not path.exists():
        raise BatchError(f"the batch input {path} does not exist")
    rows, base = _rows(path)
    items, errors = [], []
    for ordinal, (where, row) in enumerate(rows):
        try:
            items.append(_item(row, base, ordinal, where))
        except BatchError as exc:
            errors.append(str(exc))
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            errors.append(f"{item.where}: id {item.id!r} is used already ({seen[item.id]})")
        seen.setdefault(item.id, item.where)
    if errors:
        more = f" (and {len(errors) - SHOWN_ERRORS} more)" if len(errors) > SHOWN_ERRORS else ""
        raise BatchError(f"{len(errors)} malformed row(s) in {path}{more}: " + "; ".join(errors[:SHOWN_ERRORS]))
    if not items:
        raise BatchError(f"the batch input {path} holds no items")
    return items


def checksum(source: str | Path) -> str:
    """sha256 over the input's bytes (a folder: over its files' relative names and bytes, sorted)."""
    path = Path(source)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether item `item_id` belongs to shard (i, n), 0 <= i < n: by a hash of its id, so that a
    shard keeps its items when the input grows or is reordered."""
    if shard is None:
        return True
    index, count = shard
    return int(hashlib.sha256(item_id.encode()).hexdigest(), 16) % count == index


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" (0 <= i < n) as (i, n)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise BatchError(f"a shard is i/n with whole numbers, e.g. 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise BatchError(f"shard {text}: i must be in 0..n-1")
    return index, count


def _rows(path: Path) -> tuple[Iterable[tuple[str, dict[str, Any]]], Path]:
    if path.is_dir():
        if any((path / marker).exists() for marker in DATASET_MARKERS):
            return _dataset_rows(path), path
        for name in QUESTION_FILES:
            if (path / name).is_file():
                return _named_by_image(_file_rows(path / name)), path
        raise BatchError(f"the folder {path} has no questions file ({', '.join(QUESTION_FILES)}) and is not a "
                         "dataset saved with datasets' save_to_disk")
    return _file_rows(path), path.parent


def _named_by_image(rows: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A folder's questions file may leave out ids: a row is then named by its image's path
    without the suffix ("cats/001" for cats/001.jpg)."""
    for where, row in rows:
        if "id" not in row and "question_id" not in row and isinstance(row.get("image"), str):
            row = {**row, "id": Path(row["image"]).with_suffix("").as_posix()}
        yield where, row


def _file_rows(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(path)
    if suffix == ".csv":
        return _csv_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise BatchError(f"{path}: a batch input is .jsonl, .csv, .parquet, a folder with a questions file or a "
                     f"saved datasets dataset, not {suffix or 'a file without a suffix'}")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, {"__error__": f"not JSON ({exc.msg})"}
                continue
            yield where, row if isinstance(row, dict) else {"__error__": "not a JSON object"}


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            # Cells holding JSON lists (several images, a box) are read as JSON; empty cells as absent.
            yield f"{path.name} line {reader.line_num}", {k: _cell(v) for k, v in row.items() if k and v not in ("", None)}


def _cell(text: str) -> Any:
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise BatchError(f"{path} is not a readable Parquet table ({exc})") from None
    for number, row in enumerate(table.to_pylist(), 1):
        yield f"{path.name} row {number}", row


def _dataset_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        from datasets import Dataset, DatasetDict, load_from_disk
    except ImportError:
        raise BatchError("reading a saved dataset needs the datasets package: pip install datasets") from None
    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        raise BatchError(f"{path} holds the splits {', '.join(dataset)}: give one split's folder, e.g. "
                         f"{path / next(iter(dataset))}")
    assert isinstance(dataset, Dataset)
    for number, row in enumerate(dataset, 1):
        yield f"{path.name} row {number}", row


def _item(row: dict[str, Any], base: Path, ordinal: int, where: str) -> Item:
    def bad(message: str) -> BatchError:
        return BatchError(f"{where}: {message}")

    if "__error__" in row:
        raise bad(row["__error__"])
    row = {k: v for k, v in row.items() if v is not None}  # a table's empty cells are absent fields
    item_id = row.get("id", row.get("question_id"))
    if item_id is None or not str(item_id).strip():
        raise bad("no id (give each row an id or question_id)")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("no question")
    images = row.get("images", row.get("image"))
    images = images if isinstance(images, list) else [images] if images is not None else []
    if not images:
        raise bad("no image (give image: a path, or images: a list of paths)")

    def optional_path(name: str) -> Path | None:
        return _path(row[name], base, bad) if row.get(name) is not None else None
    return Item(id=str(item_id), images=[_image(x, base, bad) for x in images], question=question,
                answer=_text(row.get("answer"), "answer", bad), mask=optional_path("mask"), box=_box(row.get("box"), bad),
                fixations=optional_path("fixations"), attention_map=optional_path("attention_map"),
                question_fixations=_word_gaze(row.get("question_fixations"), question, bad), objects=optional_path("objects"),
                expected_answer=_text(row.get("expected_answer"), "expected_answer", bad), ordinal=ordinal, where=where)


def _numbers(value: Any, what: str, bad) -> tuple[float, ...]:
    """A list of numbers, or its JSON text (a CSV cell), as floats; else the row is malformed."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise bad(f"{what}, got {value!r}") from None
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise bad(f"{what}, got {value!r}") from None


def _word_gaze(value: Any, question: str, bad) -> tuple[float, ...] | None:
    if value is None:
        return None
    gaze = _numbers(value, "question_fixations must be a list of numbers", bad)
    words = len(question.split())
    if len(gaze) != words or min(gaze) < 0:
        raise bad(f"question_fixations needs one non-negative number per word of the question ({words}), "
                  f"got {len(gaze)}" + (" with negative values" if gaze and min(gaze) < 0 else ""))
    return gaze


def _text(value: Any, name: str, bad) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise bad(f"{name} must be a non-empty text when given")
    return value


def _image(value: Any, base: Path, bad) -> Path | Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):  # a datasets Image column left undecoded: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            import io

            return Image.open(io.BytesIO(value["bytes"]))
        value = value.get("path")
    return _path(value, base, bad)


def _path(value: Any, base: Path, bad) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise bad(f"a path must be a non-empty text, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _box(value: Any, bad) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    box = _numbers(value, "box must be [x0, y0, x1, y1] numbers", bad)
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise bad(f"box must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1, got {list(value)}")
    return box  # type: ignore[return-value]
