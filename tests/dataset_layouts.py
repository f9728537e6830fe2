"""Small fixtures in the published layouts the dataset loaders read (glimpse.eval.datasets): VQA-HAT,
VQA-MHUG (the fixation tables of docs/evaluation.md) and GQA. Shapes-world scenes stand in for the
photographs, so that the shipped model can explain them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from glimpse.toy import world


def coco_images(folder: Path, split: str, image_ids: list[int]) -> list[world.Sample]:
    """Scenes saved as COCO_<split>2014_<id>.jpg in folder/<split>2014 (PNG bytes: exact pixels)."""
    images = folder / f"{split}2014"
    images.mkdir(parents=True, exist_ok=True)
    samples = [world.make_sample(image_id) for image_id in image_ids]
    for image_id, sample in zip(image_ids, samples):
        sample.image.save(images / f"COCO_{split}2014_{image_id:012d}.jpg", format="PNG")
    return samples


def write_vqa_hat(root: Path, split: str = "val", annotators: int = 3) -> dict[int, dict]:
    """Three questions with VQA-HAT maps (448 x 448, as released; `annotators` maps each) and one
    question without; returns question id -> {question, image_id, answer, maps}."""
    ids = [5, 6, 7, 8]
    samples = coco_images(root / "coco", split, ids)
    questions = [{"image_id": i, "question": s.question, "question_id": i * 10 + 1} for i, s in zip(ids, samples)]
    (root / f"OpenEnded_mscoco_{split}2014_questions.json").write_text(json.dumps({"questions": questions}))
    annotations = [{"question_id": q["question_id"], "image_id": q["image_id"], "multiple_choice_answer": s.answer}
                   for q, s in zip(questions, samples)]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / f"mscoco_{split}2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    maps_folder = root / f"vqahat_{split}"
    maps_folder.mkdir()
    rng = np.random.default_rng(0)
    out = {}
    for q, s in zip(questions[:3], samples[:3]):
        maps = [rng.integers(0, 256, (448, 448)).astype(np.uint8) for _ in range(annotators)]
        for n, grey in enumerate(maps, 1):
            Image.fromarray(grey).save(maps_folder / f"{q['question_id']}_{n}.png")
        out[q["question_id"]] = {**q, "answer": s.answer, "maps": maps}
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(maps_folder / "999_1.png")  # a question the file lacks
    return out


def write_vqa_mhug(root: Path, split: str = "val") -> dict[int, dict]:
    """Two questions with image and word fixations, in the tables of docs/evaluation.md."""
    ids = [3, 4]
    samples = coco_images(root, split, ids)
    questions = [{"image_id": i, "question": s.question, "question_id": i * 100} for i, s in zip(ids, samples)]
    (root / f"v2_OpenEnded_mscoco_{split}2014_questions.json").write_text(json.dumps({"questions": questions}))
    gaze = root / "gaze"
    gaze.mkdir()
    points = {300: [(10.2, 20.7), (10.9, 20.1), (50.0, 5.0), (1e4, 3.0)], 400: [(0.0, 0.0)]}
    with open(gaze / "image_fixations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question_id", "participant", "x", "y", "duration"])
        for qid, found in points.items():
            writer.writerows([qid, "p1", x, y, 200] for x, y in found)
    words = {300: [(0, 120.0), (2, 80.0), (2, 40.0)]}  # question 400: no gaze on its words
    with open(gaze / "text_fixations.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question_id", "participant", "word", "duration"])
        for qid, found in words.items():
            writer.writerows([qid, "p1", w, d] for w, d in found)
    return {q["question_id"]: {**q, "points": points[q["question_id"]], "words": words.get(q["question_id"])}
            for q in questions}


def write_gqa(root: Path, split: str = "val") -> dict[str, dict]:
    """Three questions on two scenes: two refer to objects of their scene graph, one to none."""
    samples = {"img1": world.make_sample(2), "img2": world.make_sample(3)}
    (root / "images").mkdir(parents=True)
    for image_id, sample in samples.items():
        sample.image.save(root / "images" / f"{image_id}.jpg", format="PNG")
    width, height = samples["img1"].image.size
    graphs = {image_id: {"width": width, "height": height, "objects": {
        "11": {"name": "thing", "x": 2, "y": 3, "w": 10, "h": 5},
        "12": {"name": "other", "x": 30, "y": 30, "w": 4, "h": 4}}} for image_id in samples}
    questions = {
        "201": {"imageId": "img1", "question": samples["img1"].question, "answer": samples["img1"].answer,
                "annotations": {"question": {"2": "11"}, "answer": {}, "fullAnswer": {"3:5": "12"}}},
        "1000": {"imageId": "img2", "question": samples["img2"].question, "answer": samples["img2"].answer,
                 "annotations": {"question": {}, "answer": {"0": "12"}, "fullAnswer": {}}},
        "30": {"imageId": "img2", "question": "Is it day?", "answer": "yes",
               "annotations": {"question": {}, "answer": {}, "fullAnswer": {}}},
    }
    (root / "questions").mkdir()
    (root / "questions" / f"{split}_balanced_questions.json").write_text(json.dumps(questions))
    (root / f"{split}_sceneGraphs.json").write_text(json.dumps(graphs))
    return questions
