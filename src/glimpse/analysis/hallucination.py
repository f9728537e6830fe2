"""Hallucination: how well each answer word is grounded in the image.

Per answer token, two numbers from its own map: `relative_relevance`, its visual relevance (the mean
of its image-token scores) over the answer's mean visual relevance, and `concentration`, the share of
its map's positive mass on its most relevant region (its top `region` share of image tokens). A token
is flagged when its relative relevance is below `threshold`: it looked at the image less than the
answer does on average. The grounding score the toy validation ranks by is the relative relevance.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..explanation import Explanation
from ..render import data_uri, overlay
from .files import write_report

REGION = 0.1
THRESHOLD = 0.5


def grounding(explanation: Explanation, image: int = 0, region: float = REGION,
              threshold: float = THRESHOLD) -> dict[str, Any]:
    """Every answer token's relative relevance, concentration and flag (see the module's docstring)."""
    relevance = np.array([explanation.image_scores(image, t).mean() for t in range(len(explanation.answer_tokens))])
    mean = relevance.mean()
    rows = []
    for t, text in enumerate(explanation.answer_tokens):
        relative = float(relevance[t] / mean) if mean > 0 else 0.0
        rows.append({"token": text, "relative_relevance": relative,
                     "concentration": concentration(explanation.image_scores(image, t), region),
                     "flagged": relative < threshold})
    return {"method": explanation.method, "question": explanation.question, "answer": explanation.answer,
            "region": region, "threshold": threshold, "tokens": rows}


def concentration(scores: np.ndarray, region: float = REGION) -> float:
    """The share of the positive mass of `scores` on their top `region` share of entries (at least one)."""
    positive = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
    total = positive.sum()
    if total <= 0:
        return 0.0
    keep = max(1, int(round(region * positive.size)))
    return float(np.sort(positive)[::-1][:keep].sum() / total)


def write_hallucination_report(explanation: Explanation, folder: str | Path, image: int = 0,
                               region: float = REGION, threshold: float = THRESHOLD) -> list[Path]:
    """hallucination.html (each token's map, scores and flag) and hallucination.json in `folder`."""
    result = grounding(explanation, image, region, threshold)
    cards = "".join(
        f'<figure class="{"flag" if row["flagged"] else ""}"><img src="{data_uri(overlay(explanation, image, t))}" '
        f'alt="map of token {t}"><figcaption>{html.escape(row["token"])}<br>relative relevance '
        f'{row["relative_relevance"]:.2f}<br>concentration {row["concentration"]:.2f}'
        f'{"<br><b>weakly grounded</b>" if row["flagged"] else ""}</figcaption></figure>'
        for t, row in enumerate(result["tokens"]))
    flagged = [row["token"].strip() for row in result["tokens"] if row["flagged"]]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Grounding: {html.escape(explanation.answer)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:4px;text-align:center;padding:4px}}
figure img{{width:160px}} .flag{{outline:3px solid #d62728}}</style></head><body><h1>Grounding of each answer word</h1>
<p>Method <b>{html.escape(explanation.method)}</b>. Question: {html.escape(explanation.question)}<br>
Answer: {html.escape(explanation.answer)}</p>
<p>Weakly grounded (relative relevance below {threshold}): {html.escape(", ".join(flagged)) or "none"}.</p>
<p>Relative relevance: the token's mean image-token score over the answer's mean; concentration: the share of
its map's positive mass on its top {region:.0%} of image tokens.</p><div>{cards}</div></body></html>"""
    return write_report(folder, "hallucination", page, result)
