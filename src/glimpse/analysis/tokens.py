"""Token-level dynamics of one explanation: for each answer token, how much it looked at the image
and at the question, how much it weighs in the holistic map, and its own map (a filmstrip).

Visual relevance is the mean of the token's image-token scores and prompt relevance the mean of its
question-token scores: for GLIMPSE exactly v_t and a_t of Step 4 (docs/method.md), the means of
its propagated row over V and P; for other methods the same means of their own scores.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..explanation import Explanation
from ..render import agg_figure, data_uri, figure_picture, overlay
from .files import write_report


def token_dynamics(explanation: Explanation) -> dict[str, Any]:
    """Per answer token (in answer order): text, probability, weight in the holistic visual map,
    visual and prompt relevance, and the question word it scores highest."""
    e = explanation
    words = [e.prompt_words[int(np.argmax(e.token_prompt_word_scores(t)))] if e.prompt_words else None
             for t in range(len(e.answer_tokens))]
    return {"method": e.method, "question": e.question, "answer": e.answer,
            "tokens": [{"token": text, "probability": float(e.probs[t]), "weight": float(e.token_weights[t]),
                        "visual_relevance": float(e.token_visual[t].mean()),
                        "prompt_relevance": float(e.token_prompt[t].mean()) if e.token_prompt.shape[1] else 0.0,
                        "top_question_word": words[t]}
                       for t, text in enumerate(e.answer_tokens)]}


def tokens_report(explanation: Explanation, image: int = 0) -> str:
    """A standalone HTML page: the relevance plot, the filmstrip of per-token maps, the table."""
    dynamics = token_dynamics(explanation)
    rows = dynamics["tokens"]
    strip = "".join(
        f'<figure><img src="{data_uri(overlay(explanation, image, t))}" alt="map of token {t}">'
        f"<figcaption>{t}: {html.escape(row['token'])}</figcaption></figure>" for t, row in enumerate(rows))
    table = "".join(
        f"<tr><td>{t}</td><td>{html.escape(row['token'])}</td><td>{row['probability']:.3f}</td>"
        f"<td>{row['weight']:.3f}</td><td>{row['visual_relevance']:.4g}</td><td>{row['prompt_relevance']:.4g}</td>"
        f"<td>{html.escape(row['top_question_word'] or '')}</td></tr>" for t, row in enumerate(rows))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Token dynamics: {html.escape(explanation.answer)}</title>
<style>body{{font-family:sans-serif;margin:2em}} figure{{display:inline-block;margin:4px;text-align:center}}
figure img{{width:160px}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 8px}}</style>
</head><body><h1>Token dynamics</h1>
<p>Method <b>{html.escape(explanation.method)}</b>. Question: {html.escape(explanation.question)}<br>
Answer: {html.escape(explanation.answer)}</p>
<h2>Relevance per answer token</h2><img src="{data_uri(_plot(rows), "PNG", side=900)}" alt="relevance plot">
<p>Visual relevance: the mean of the token's image-token scores; prompt relevance: the mean of its question-token
scores (GLIMPSE: v_t and a_t); weight: the token's weight in the holistic visual map.</p>
<h2>Each token's map</h2><div>{strip}</div>
<h2>Table</h2><table><tr><th>#</th><th>token</th><th>p</th><th>weight</th><th>visual relevance</th>
<th>prompt relevance</th><th>top question word</th></tr>{table}</table></body></html>"""


def write_tokens_report(explanation: Explanation, folder: str | Path, image: int = 0) -> list[Path]:
    """tokens.html and tokens.json in `folder`."""
    return write_report(folder, "tokens", tokens_report(explanation, image), token_dynamics(explanation))


def _plot(rows: list[dict[str, Any]]) -> Image.Image:
    figure = agg_figure(figsize=(max(6.0, 0.6 * len(rows)), 3.2), dpi=100)
    axes = figure.add_subplot()
    x = np.arange(len(rows))
    axes.bar(x, [r["weight"] for r in rows], color="#f4b183", label="weight in the holistic map")
    twin = axes.twinx()
    twin.plot(x, [r["visual_relevance"] for r in rows], "o-", color="#1f77b4", label="visual relevance")
    twin.plot(x, [r["prompt_relevance"] for r in rows], "s-", color="#2ca02c", label="prompt relevance")
    axes.set_xticks(x, [r["token"].strip() or repr(r["token"]) for r in rows], rotation=45, ha="right")
    axes.set_ylabel("weight")
    twin.set_ylabel("relevance")
    figure.legend(loc="upper center", ncol=3, fontsize="small", frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.9))
    return figure_picture(figure)
