"""Faithfulness of one explanation through the model: the holistic map's deletion and insertion
curves (scored by the whole answer's log-likelihood) and each answer token's deletion curve
(its own map, scored by its own log-probability), each against random orders.

A gain (`Curve.gain`) says how much faster the map's order moves the score than random: deletion
gain = random AUC - map AUC, insertion gain = map AUC - random AUC (both > 0 for a faithful map; in
log-likelihood units times the fraction of the image). A token whose log-probability does not depend on the image
(a word the question or the grammar settles) has a gain near 0 whatever its map: its map cannot be
judged this way, which the report says.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from ..eval.faithfulness import Curve, faithfulness_curve
from ..explanation import Explanation
from ..render import agg_figure, data_uri, figure_picture
from .files import write_report

# A token whose deletion curves (map and random) never move its log-probability by more than this
# is "not image-dependent": its gain says nothing about its map.
STEADY = 0.05


def faithfulness_profile(model: Any, processor: Any, explanation: Explanation, **options: Any) -> dict[str, Any]:
    """The holistic curves and each token's deletion curve; `options` go to `faithfulness_curve`
    (baseline, step, random_orders, ...)."""
    holistic = {kind: faithfulness_curve(model, processor, explanation, kind, **options)
                for kind in ("deletion", "insertion")}
    tokens = [faithfulness_curve(model, processor, explanation, "deletion", token=t, **options)
              for t in range(len(explanation.answer_tokens))]
    return {"method": explanation.method, "question": explanation.question, "answer": explanation.answer,
            "options": options, "holistic": {kind: _curve(c) for kind, c in holistic.items()},
            "tokens": [{"token": text, "weight": float(explanation.token_weights[t]), **_curve(c),
                        "image_dependent": _moves(c)} for t, (text, c) in enumerate(zip(explanation.answer_tokens, tokens))]}


def _curve(curve: Curve) -> dict[str, Any]:
    return {"kind": curve.kind, "fractions": curve.fractions.tolist(), "scores": curve.scores.tolist(),
            "random": curve.random.tolist(), "auc": curve.auc, "random_auc": curve.random_auc, "gain": curve.gain}


def _moves(curve: Curve) -> bool:
    spans = [np.ptp(curve.scores), np.ptp(curve.random)]
    return bool(max(spans) > STEADY)


def write_faithfulness_report(model: Any, processor: Any, explanation: Explanation, folder: str | Path,
                              **options: Any) -> list[Path]:
    """faithfulness.html (the curves, each token's gain and weight) and faithfulness.json in `folder`."""
    result = faithfulness_profile(model, processor, explanation, **options)
    rows = "".join(
        f"<tr><td>{t}</td><td>{html.escape(row['token'])}</td><td>{row['weight']:.3f}</td><td>{row['gain']:+.3f}</td>"
        f"<td>{'yes' if row['image_dependent'] else 'no (not judged)'}</td></tr>" for t, row in enumerate(result["tokens"]))
    holistic = result["holistic"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Faithfulness: {html.escape(explanation.answer)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;
padding:2px 8px}}</style></head><body><h1>Faithfulness through the model</h1>
<p>Method <b>{html.escape(explanation.method)}</b>. Question: {html.escape(explanation.question)}<br>
Answer: {html.escape(explanation.answer)}</p>
<p>Holistic map: deletion gain {holistic['deletion']['gain']:+.3f}, insertion gain {holistic['insertion']['gain']:+.3f}
(random AUC minus the map's for deletion, the map's minus random for insertion; above 0: the map's order moves the
answer's log-likelihood faster than random).</p>
<img src="{data_uri(_plot(result), "PNG", side=1100)}" alt="deletion and insertion curves">
<h2>Each answer token's own map</h2><p>Deletion curve of the token's map, scored by the token's log-probability.
A token whose log-probability the image does not move (by {STEADY} or less along either curve) is not judged:
its gain is near 0 whatever its map.</p>
<table><tr><th>#</th><th>token</th><th>weight in the holistic map</th><th>deletion gain</th><th>image-dependent</th>
</tr>{rows}</table></body></html>"""
    return write_report(folder, "faithfulness", page, result)


def _plot(result: dict[str, Any]):
    figure = agg_figure(figsize=(11, 3.2), dpi=100)
    panels = figure.subplots(1, 3)
    for axes, kind in zip(panels[:2], ("deletion", "insertion")):
        curve = result["holistic"][kind]
        axes.plot(curve["fractions"], curve["scores"], "o-", label="map order")
        axes.plot(curve["fractions"], curve["random"], "--", color="grey", label="random order")
        axes.set_title(f"{kind}: gain {curve['gain']:+.3f}", fontsize=10)
        axes.set_xlabel("fraction of image tokens " + ("removed" if kind == "deletion" else "revealed"))
        axes.set_ylabel("log p(answer)")
        axes.legend(fontsize="small")
    tokens = result["tokens"]
    x = np.arange(len(tokens))
    colours = ["#1f77b4" if row["image_dependent"] else "#cccccc" for row in tokens]
    panels[2].bar(x, [row["gain"] for row in tokens], color=colours)
    panels[2].set_xticks(x, [row["token"].strip() or repr(row["token"]) for row in tokens], rotation=45, ha="right")
    panels[2].set_title("each token's deletion gain (grey: not image-dependent)", fontsize=10)
    figure.tight_layout()
    return figure_picture(figure)
