"""Evaluation datasets, each read in its published layout from a local folder and written as a batch
input (docs/batch-format.md): items.jsonl and the ground truth converted to image-sized maps.

Nothing is downloaded. A loader given an incomplete folder names every file it lacks and where the
data is published. `prepare` writes into the evaluation's data folder and reuses what it wrote before
for the same arguments. The layouts are written down in docs/evaluation.md ("Datasets").
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..folders import created

SPLITS = ("train", "val")
COCO = "https://cocodataset.org/#download (2014 images)"
VQA_V1 = "https://visualqa.org/vqa_v1_download.html"
VQA_V2 = "https://visualqa.org/download.html"
# The release's own file layout could not be checked here: the loader reads the two fixation tables
# that docs/evaluation.md describes, into which the release converts in a few lines.
MHUG = "published with Sood et al. 2021, arXiv 2109.13116; as the tables of docs/evaluation.md"


@dataclass
class Prepared:
    """A dataset written as a batch input: its items file, how many items it holds, and how many
    of the dataset's questions were left out and why (e.g. no human map)."""

    items: Path
    count: int
    left_out: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        left = "; ".join(f"{n} left out: {why}" for why, n in self.left_out.items() if n)
        return f"{self.count} items in {self.items}" + (f" ({left})" if left else "")


@dataclass(frozen=True)
class Dataset:
    name: str
    summary: str
    needs_root: bool
    load: Callable[[Path, Path, int | None, str], Prepared]


def prepare(name: str, root: str | Path | None, folder: str | Path, limit: int | None = None,
            split: str = "val") -> Prepared:
    """Dataset `name` read from `root` as a batch input written into `folder` (for "items", `root`
    is already one and is returned as it is). `limit` keeps the first N items in the dataset's own
    order (question ids)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    if dataset.needs_root and root is None:
        raise DatasetError(f"the {name} dataset is read from a folder: give its root folder ({dataset.summary})")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    base = Path(root).expanduser().resolve() if root is not None else None
    if base is not None and not base.exists():
        raise DatasetError(f"the dataset folder {base} does not exist")
    if name == "items":
        return _items(base, Path(folder), limit, split)
    out = Path(folder)
    stamp = {"dataset": name, "root": None if base is None else str(base), "limit": limit, "split": split}
    marker = out / "prepared.json"
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("stamp") == stamp and Path(done["items"]).is_file():
            return Prepared(Path(done["items"]), done["count"], done["left_out"])
    with created(out):
        prepared = dataset.load(base, out, limit, split)
    marker.write_text(json.dumps({"stamp": stamp, **asdict(prepared), "items": str(prepared.items)}), encoding="utf-8")
    return prepared


def _items(root: Path, out: Path, limit: int | None, split: str) -> Prepared:
    """Any batch input, used as it is."""
    from ..batch.items import read_items

    count = len(read_items(root))
    return Prepared(root, count if limit is None else min(limit, count))


# --- shapes world ---------------------------------------------------------------------------------
def _toy(root: Path | None, out: Path, limit: int | None, split: str) -> Prepared:
    from ..toy.bench import HELDOUT_SEED
    from ..toy.scenes import write_scenes

    count = limit or TOY_SCENES
    return Prepared(write_scenes(out, count, HELDOUT_SEED), count)


TOY_SCENES = 200


# --- VQA-HAT --------------------------------------------------------------------------------------
def _vqa_hat(root: Path, out: Path, limit: int | None, split: str) -> Prepared:
    """VQA-HAT (Das et al. 2016): grey-level human attention maps, <question_id>_<n>.png in
    vqahat_<split>/ (n = 1..3 annotators on val), for VQA v1 questions on COCO 2014 images."""
    maps = _found(root, f"vqahat_{split}", f"the VQA-HAT maps (vqahat_{split}.zip, https://abhishekdas.com/vqa-hat/)")
    questions = _found(root, f"OpenEnded_mscoco_{split}2014_questions.json", f"the VQA v1 questions ({VQA_V1})")
    images = _found(root, f"{split}2014", f"the COCO {split}2014 images ({COCO})")
    _missing("VQA-HAT", root, [maps, questions, images])
    annotations = _path(root, f"mscoco_{split}2014_annotations.json")
    by_question: dict[int, list[Path]] = defaultdict(list)
    for path in maps.path.iterdir():
        match = re.fullmatch(r"(\d+)_(\d+)\.png", path.name)
        if match:
            by_question[int(match.group(1))].append(path)
    answers, rows, unknown = _answers(annotations), [], []
    for qid, question, image in _coco_questions(by_question, questions.path, images.path, split, limit, unknown):
        target = out / "maps" / f"{qid}.png"
        _write_mean_map(sorted(by_question[qid]), image, target)
        rows.append({"id": f"vqahat-{qid}", "image": str(image), "question": question["question"],
                     "attention_map": str(target), **_expected(answers.get(qid))})
    return _written(out, rows, "VQA-HAT", root, {"maps of questions not in the questions file": len(unknown)})


def _write_mean_map(paths: list[Path], image: Path, target: Path) -> None:
    """The annotators' maps averaged, at the image's size (bilinear), scaled to 0..255."""
    size = _size(image)
    maps = []
    for path in paths:
        with Image.open(path) as picture:
            grey = picture.convert("F")
            maps.append(np.asarray(grey.resize(size, Image.BILINEAR) if size else grey, dtype=np.float64))
    mean = np.mean(maps, axis=0)
    peak = mean.max()
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mean / peak * 255 if peak > 0 else mean).round().astype(np.uint8)).save(target)


# --- VQA-MHUG -------------------------------------------------------------------------------------
def _vqa_mhug(root: Path, out: Path, limit: int | None, split: str) -> Prepared:
    """VQA-MHUG (Sood et al. 2021): gaze on the image and on the question's words, for VQA v2
    questions on COCO 2014 images, in the fixation tables of docs/evaluation.md."""
    image_gaze = _found(root, "image_fixations.csv", f"the image fixations of VQA-MHUG ({MHUG})")
    text_gaze = _found(root, "text_fixations.csv", f"the question-word fixations of VQA-MHUG ({MHUG})")
    questions = _found(root, f"v2_OpenEnded_mscoco_{split}2014_questions.json", f"the VQA v2 questions ({VQA_V2})")
    images = _found(root, f"{split}2014", f"the COCO {split}2014 images ({COCO})")
    _missing("VQA-MHUG", root, [image_gaze, text_gaze, questions, images])
    annotations = _path(root, f"v2_mscoco_{split}2014_annotations.json")
    points: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for where, row in _table(image_gaze.path, ("question_id", "x", "y")):
        points[_int(row, "question_id", where)].append((_float(row, "x", where), _float(row, "y", where)))
    words: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for where, row in _table(text_gaze.path, ("question_id", "word")):
        words[_int(row, "question_id", where)][_int(row, "word", where)] += (
            _float(row, "duration", where) if row.get("duration") not in (None, "") else 1.0)
    answers, rows, unknown = _answers(annotations), [], []
    for qid, question, image in _coco_questions(points, questions.path, images.path, split, limit, unknown):
        target = out / "fixations" / f"{qid}.png"
        _write_fixation_counts(points[qid], image, target)
        row = {"id": f"mhug-{qid}", "image": str(image), "question": question["question"], "fixations": str(target),
               **_expected(answers.get(qid))}
        count = len(question["question"].split())
        if qid in words:
            if max(words[qid]) >= count or min(words[qid]) < 0:
                raise DatasetError(f"{text_gaze.path}: question {qid} has {count} words, its fixations name word "
                                   f"{max(words[qid])} (words are counted from 0)")
            row["question_fixations"] = [words[qid].get(w, 0.0) for w in range(count)]
        rows.append(row)
    return _written(out, rows, "VQA-MHUG", root, {"fixations of questions not in the questions file": len(unknown)})


def _write_fixation_counts(points: list[tuple[float, float]], image: Path, target: Path) -> None:
    """Fixation counts per pixel (16-bit grey) at the image's size; points outside it are dropped."""
    size = _size(image)
    if size is None:  # the item fails on its missing image; the map just has to exist
        size = (int(max(x for x, _ in points)) + 1, int(max(y for _, y in points)) + 1)
    width, height = size
    counts = np.zeros((height, width), dtype=np.uint16)
    for x, y in points:
        col, row = int(np.floor(x)), int(np.floor(y))
        if 0 <= col < width and 0 <= row < height:
            counts[row, col] += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(counts).save(target)


# --- GQA ------------------------------------------------------------------------------------------
def _gqa(root: Path, out: Path, limit: int | None, split: str) -> Prepared:
    """GQA (Hudson & Manning 2019) as a grounding set: the evidence of a question is the union of
    the scene-graph boxes of the objects its question, answer and full answer refer to
    (the questions' `annotations`)."""
    source = "https://cs.stanford.edu/people/dorarad/gqa/download.html"
    questions = _found(root, f"{split}_balanced_questions.json", f"the GQA balanced questions (questions1.2.zip, {source})")
    graphs = _found(root, f"{split}_sceneGraphs.json", f"the GQA scene graphs (sceneGraphs.zip, {source})")
    images = _found(root, "images", f"the GQA images (images.zip, {source})")
    _missing("GQA", root, [questions, graphs, images])
    scenes = _json(graphs.path)
    rows, unreferenced = [], 0
    for qid, question in sorted(_json(questions.path).items(), key=lambda pair: _order(pair[0])):
        if limit is not None and len(rows) == limit:
            break
        scene = scenes.get(question["imageId"])
        boxes = _referenced_boxes(question, scene)
        if not boxes:
            unreferenced += 1
            continue
        image_id = question["imageId"]
        mask, objects = out / "masks" / f"{qid}.png", out / "objects" / f"{image_id}.png"
        size = (scene["width"], scene["height"])
        _write_boxes(boxes, size, mask)
        if not objects.is_file():
            _write_boxes([_box(o) for o in scene["objects"].values()], size, objects)
        rows.append({"id": f"gqa-{qid}", "image": str(images.path / f"{image_id}.jpg"), "question": question["question"],
                     "mask": str(mask), "objects": str(objects), **_expected(question.get("answer"))})
    return _written(out, rows, "GQA", root, {"questions referring to no object of their scene graph": unreferenced})


def _referenced_boxes(question: dict[str, Any], scene: dict[str, Any] | None) -> list[tuple[float, ...]]:
    if scene is None:
        return []
    named = question.get("annotations", {})
    ids = {part.strip() for kind in ("question", "answer", "fullAnswer") for value in named.get(kind, {}).values()
           for part in str(value).split(",")}
    return [_box(scene["objects"][i]) for i in sorted(ids) if i in scene["objects"]]


def _box(obj: dict[str, Any]) -> tuple[float, ...]:
    return (obj["x"], obj["y"], obj["x"] + obj["w"], obj["y"] + obj["h"])


def _write_boxes(boxes: Iterable[tuple[float, ...]], size: tuple[int, int], target: Path) -> None:
    from .metrics import box_mask

    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        if box[0] < box[2] and box[1] < box[3]:
            mask |= box_mask(box, height, width)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * 255).astype(np.uint8)).save(target)


def _order(qid: str) -> tuple[int, str]:
    return (int(qid), qid) if qid.isdigit() else (1 << 62, qid)


# --- shared ---------------------------------------------------------------------------------------
def _coco_questions(ids: Iterable[int], questions: Path, images: Path, split: str, limit: int | None,
                    unknown: list[int]) -> Iterable[tuple[int, dict[str, Any], Path]]:
    """(question id, VQA question, COCO image path) for the first `limit` of `ids` in id order that the
    questions file has; the others are appended to `unknown`."""
    asked = {q["question_id"]: q for q in _json(questions)["questions"]}
    given = 0
    for qid in sorted(ids):
        if qid not in asked:
            unknown.append(qid)
            continue
        if limit is not None and given == limit:
            return
        given += 1
        yield qid, asked[qid], images / f"COCO_{split}2014_{asked[qid]['image_id']:012d}.jpg"



@dataclass
class _Part:
    name: str
    what: str
    path: Path | None


def _found(root: Path, name: str, what: str) -> _Part:
    return _Part(name, what, _path(root, name))


def _path(root: Path, name: str) -> Path | None:
    """ROOT/name, or ROOT/*/name (as an archive unpacks into a folder of its own)."""
    for path in (root / name, *sorted(root.glob(f"*/{name}"))):
        if path.exists():
            return path
    return None


def _missing(dataset: str, root: Path, parts: list[_Part]) -> None:
    lacking = [f"{part.name} ({part.what})" for part in parts if part.path is None]
    if lacking:
        raise DatasetError(f"the {dataset} folder {root} lacks (in it, or one folder down): " + "; ".join(lacking))


def _written(out: Path, rows: list[dict[str, Any]], dataset: str, root: Path, left_out: dict[str, int]) -> Prepared:
    if not rows:
        raise DatasetError(f"the {dataset} folder {root} holds no item: "
                           + ("; ".join(f"{n} {why}" for why, n in left_out.items() if n) or "its files are empty"))
    path = out / "items.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return Prepared(path, len(rows), left_out)


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not readable JSON ({exc})") from None


def _answers(path: Path | None) -> dict[int, str]:
    """question id -> the most common human answer (VQA's multiple_choice_answer); {} without the file."""
    if path is None:
        return {}
    return {a["question_id"]: a["multiple_choice_answer"] for a in _json(path)["annotations"]}


def _expected(answer: str | None) -> dict[str, str]:
    return {} if not answer else {"expected_answer": answer}


def _size(image: Path) -> tuple[int, int] | None:
    try:
        with Image.open(image) as picture:
            return picture.size
    except OSError:
        return None


def _table(path: Path, required: tuple[str, ...]) -> Iterable[tuple[str, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [name for name in required if name not in (reader.fieldnames or [])]
        if absent:
            raise DatasetError(f"{path} has no column {', '.join(absent)} (its columns: "
                               f"{', '.join(reader.fieldnames or [])})")
        for row in reader:
            yield f"{path.name} line {reader.line_num}", row


def _int(row: dict[str, str], name: str, where: str) -> int:
    try:
        return int(row[name])
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be a whole number, got {row.get(name)!r}") from None


def _float(row: dict[str, str], name: str, where: str) -> float:
    try:
        return float(row[name])
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be a number, got {row.get(name)!r}") from None


DATASETS = {
    "toy": Dataset("toy", "held-out shapes-world scenes with evidence masks, objects and answers", False, _toy),
    "items": Dataset("items", "any batch input: docs/batch-format.md", True, _items),
    "vqa-hat": Dataset("vqa-hat", "VQA-HAT human attention maps on VQA v1 questions and COCO images", True, _vqa_hat),
    "vqa-mhug": Dataset("vqa-mhug", "VQA-MHUG gaze on the image and the question's words, VQA v2 and COCO", True,
                        _vqa_mhug),
    "gqa": Dataset("gqa", "GQA questions with the scene-graph boxes of the objects they refer to", True, _gqa),
}
