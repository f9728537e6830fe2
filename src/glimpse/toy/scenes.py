"""Shapes-world scenes written as a batch input: images, evidence masks and items.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from . import world


def write_scenes(folder: str | Path, n: int, seed: int) -> Path:
    """Samples 0..n-1 of `world.make_dataset(n, seed)` as scene_<i>.png, mask_<i>.png (the evidence)
    and objects_<i>.png (every object) in `folder`, and their items (id, image, question, mask, objects,
    and the answer the world expects as
    `expected_answer`, which a batch run records nothing of: it explains the model's own) in
    folder/items.jsonl, which it returns."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, sample in enumerate(world.make_dataset(n, seed)):
        sample.image.save(folder / f"scene_{i}.png")
        Image.fromarray((sample.mask * 255).astype(np.uint8)).save(folder / f"mask_{i}.png")
        Image.fromarray(((sample.segmentation >= 0) * 255).astype(np.uint8)).save(folder / f"objects_{i}.png")
        lines.append(json.dumps({"id": f"scene-{i}", "image": f"scene_{i}.png", "question": sample.question,
                                 "mask": f"mask_{i}.png", "objects": f"objects_{i}.png",
                                 "expected_answer": sample.answer}))
    path = folder / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
