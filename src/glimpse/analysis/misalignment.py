"""Human misalignment: where each explanation of a batch put its peak, against the item's evidence.

For every item with an evidence mask or box, the holistic map's highest-scoring image token is
classified by what its cell on the original image covers: "aligned" (the evidence, with at least
`diffuse` times as much of the map's positive mass on it as a uniform map would put there, i.e. as
the evidence's share of the image), "right object, diffuse" (the evidence, with less),
"another object" (no evidence, but a pixel of the item's `objects` mask) or "background" (neither;
without an `objects` mask another object counts as background). The report counts the classes and
shows the `worst` items (least energy in the mask) as a gallery.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BatchError
from ..eval.metrics import energy_in_mask, token_cells, touches
from ..explanation import Explanation
from ..render import data_uri, overlay
from .files import write_report

CLASSES = ("aligned", "right object, diffuse", "another object", "background")
DIFFUSE = 2.0


def classify(explanation: Explanation, evidence: np.ndarray, objects: np.ndarray | None = None,
             diffuse: float = DIFFUSE) -> str:
    """One of CLASSES for the holistic map of image 0 (see the module's docstring)."""
    cell = token_cells(explanation.layouts[0])[int(np.argmax(explanation.image_scores(0)))]
    if touches(evidence, cell):
        concentrated = energy_in_mask(explanation, evidence) >= diffuse * evidence.mean()
        return "aligned" if concentrated else "right object, diffuse"
    if objects is not None and touches(objects & ~evidence, cell):
        return "another object"
    return "background"


def misalignment(out: str | Path, method: str = "glimpse", diffuse: float = DIFFUSE) -> list[dict[str, Any]]:
    """Every done item of batch folder `out` (by `method`) with evidence: id, energy in mask, class."""
    from ..batch import read_table
    from ..batch.runner import explanation_of, load_record
    from ..batch.work import evidence, read_mask

    rows = [r for r in read_table(out).to_pylist() if r["method"] == method and r["status"] == "done"
            and r["energy_in_mask"] is not None]
    if not rows:
        raise BatchError(f"{out} holds no explanation by {method!r} of an item with a mask or box")
    found = []
    for row in rows:
        record = load_record(out, row["id"], method)
        if "ground_truth" not in record:
            raise BatchError(f"the record of item {row['id']!r} in {out} does not name its ground truth (it was made "
                             "by an earlier glimpse): rerun the batch into a new folder")
        truth, explanation = record["ground_truth"], explanation_of(out, record)
        evidence_pixels = evidence(truth["mask"], truth["box"], explanation.images[0].size)
        objects = read_mask(truth["objects"], "objects mask") if truth.get("objects") else None
        found.append({"id": row["id"], "question": row["question"], "answer": row["answer"],
                      "energy_in_mask": row["energy_in_mask"], "class": classify(explanation, evidence_pixels, objects, diffuse),
                      "explanation": explanation})
    return found


def write_misalignment_report(out: str | Path, folder: str | Path, method: str = "glimpse", worst: int = 12,
                              diffuse: float = DIFFUSE) -> list[Path]:
    """misalignment.html (class counts, the worst items' maps) and misalignment.json in `folder`."""
    found = misalignment(out, method, diffuse)
    counts = {name: sum(f["class"] == name for f in found) for name in CLASSES}
    ordered = sorted(found, key=lambda f: f["energy_in_mask"])[:worst]
    cards = "".join(
        f'<figure><img src="{data_uri(overlay(f["explanation"]))}" alt="map of {html.escape(f["id"])}">'
        f'<figcaption><b>{html.escape(f["class"])}</b><br>{html.escape(f["id"])}: {html.escape(f["question"])}<br>'
        f'answer: {html.escape(f["answer"])}<br>energy in mask {f["energy_in_mask"]:.3f}</figcaption></figure>'
        for f in ordered)
    table = "".join(f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{n / len(found):.0%}</td></tr>"
                    for name, n in counts.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Misalignment: {html.escape(method)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:6px;width:220px;vertical-align:top}}
figure img{{width:220px}} td,th{{border:1px solid #ccc;padding:2px 8px}} table{{border-collapse:collapse}}</style></head>
<body><h1>Where the maps of {html.escape(method)} peak</h1><p>{len(found)} items with evidence. The peak is the
highest-scoring image token; "diffuse": on the evidence but with less than {diffuse:g} times the evidence's share of the image
(what a uniform map puts there) of the map's mass on it.</p>
<table><tr><th>class</th><th>items</th><th>share</th></tr>{table}</table>
<h2>The {len(ordered)} least aligned (lowest energy in the mask)</h2><div>{cards}</div></body></html>"""
    return write_report(folder, "misalignment", page, {
        "method": method, "diffuse": diffuse, "counts": counts,
        "items": [{k: v for k, v in f.items() if k != "explanation"} for f in found]})
