"""`evaluate`: a batch run over a dataset, summarised per method: every metric's mean with its
bootstrap 95% interval, answer accuracy, and a paired test of each method against a reference
method (GLIMPSE by default) on the items both scored. Written as Markdown, CSV and JSON.

The batch run (`glimpse.batch`) keeps its per-item records in OUT/batch, so an evaluation
resumes where it stopped and its items can be inspected one by one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GlimpseError
from .stats import Estimate, bootstrap_mean, paired_bootstrap

# Table column -> its name in the report; scored per item by the batch run where the ground truth allows.
METRICS = {"correct": "accuracy", "pointing_game": "pointing game", "energy_in_mask": "energy in mask",
           "nss": "NSS", "cc": "CC", "kl_div": "KL", "sim": "SIM", "auc_judd": "AUC-Judd",
           "prompt_cc": "prompt-word CC", "prompt_spearman": "prompt-word Spearman",
           "deletion_auc": "deletion AUC", "deletion_random_auc": "deletion AUC, random order",
           "insertion_auc": "insertion AUC", "insertion_random_auc": "insertion AUC, random order"}
# GLIMPSE's ablations, as variants (docs/evaluation.md): no depth prior (uniform over layers), no head
# weighting (head_lambda so large that the head softmax is uniform to 1e-9), each token weighting, and the
# paper's layer_fraction 0.6.
ABLATION = ("glimpse:depth_lambda=0", "glimpse:head_lambda=1e9", "glimpse:token_weighting=confidence",
            "glimpse:token_weighting=prompt", "glimpse:token_weighting=uniform", "glimpse:layer_fraction=0.6")
TEST = "paired bootstrap (two-sided, 10,000 resamples of the items both methods scored)"


@dataclass
class MethodScores:
    """One method's row: items done and failed, and each metric's estimate and p-value against the reference."""

    method: str
    done: int
    failed: int
    estimates: dict[str, Estimate] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    rows: list[MethodScores]
    reference: str
    test: str = TEST

    def markdown(self) -> str:
        metrics = self._metrics()
        head = ["method", "items", *[METRICS[m] for m in metrics]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            cells = [row.method, f"{row.done}" + (f" ({row.failed} failed)" if row.failed else "")]
            for metric in metrics:
                estimate = row.estimates.get(metric)
                p = row.p_values.get(metric)
                cells.append("-" if estimate is None else estimate.text() + ("" if p is None else f" (p={p:.3g})"))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + (f"\n\nMeans with bootstrap 95% intervals; p: {self.test} against "
                                   f"{self.reference}.\n")

    def csv(self) -> str:
        metrics = self._metrics()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["method", "done", "failed", *[f"{m}_{part}" for m in metrics for part in ("mean", "low", "high",
                                                                                                   "n", "p")]])
        for row in self.rows:
            values: list[Any] = [row.method, row.done, row.failed]
            for metric in metrics:
                estimate = row.estimates.get(metric)
                values += ["", "", "", "", ""] if estimate is None else [
                    estimate.mean, estimate.low, estimate.high, estimate.n, row.p_values.get(metric, "")]
            writer.writerow(values)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "test": self.test, "metrics": METRICS, "rows": [asdict(r) for r in self.rows]}

    def write(self, folder: Path) -> list[Path]:
        paths = [folder / "evaluation.md", folder / "evaluation.csv", folder / "evaluation.json"]
        for path, text in zip(paths, (self.markdown(), self.csv(), json.dumps(self.to_dict(), indent=2))):
            path.write_text(text, encoding="utf-8")
        return paths

    def _metrics(self) -> list[str]:
        return [m for m in METRICS if any(m in row.estimates for row in self.rows)]


def summarise(rows: list[dict[str, Any]], methods: Sequence[str], reference: str | None = None) -> Report:
    """The report of a batch table's rows (`glimpse.batch.read_table(...).to_pylist()`)."""
    reference = reference or methods[0]
    if reference not in methods:
        raise GlimpseError(f"the reference method {reference!r} is not among the methods {', '.join(methods)}")
    ids = sorted({row["id"] for row in rows})
    scores = {method: _scores(rows, method, ids) for method in methods}
    report = []
    for method in methods:
        done = sum(1 for r in rows if r["method"] == method and r["status"] == "done")
        failed = sum(1 for r in rows if r["method"] == method and r["status"] == "failed")
        entry = MethodScores(method, done, failed)
        for metric, values in scores[method].items():
            if not np.isfinite(values).any():
                continue
            entry.estimates[metric] = bootstrap_mean(values)
            paired = np.isfinite(values) & np.isfinite(scores[reference][metric])
            if method != reference and paired.sum() >= 2:
                entry.p_values[metric] = paired_bootstrap(values, scores[reference][metric])
        report.append(entry)
    return Report(report, reference)


def _scores(rows: list[dict[str, Any]], method: str, ids: list[str]) -> dict[str, np.ndarray]:
    """metric -> [item] scores in `ids` order (NaN where missing or failed)."""
    index = {item: i for i, item in enumerate(ids)}
    out = {metric: np.full(len(ids), np.nan) for metric in METRICS}
    for row in rows:
        if row["method"] != method or row["status"] != "done":
            continue
        for metric in METRICS:
            if row.get(metric) is not None:
                out[metric][index[row["id"]]] = float(row[metric])
    return out


def evaluate(input: str | Path, out: str | Path, *, methods: Sequence[str] = ("glimpse",),
             reference: str | None = None, faithfulness: dict[str, Any] | None = None,
             faithfulness_progress: Callable[[int, int], None] | None = None, **batch_options: Any) -> Report:
    """Explain every item of `input` (any batch input) with `methods` into OUT/batch (resumable),
    then write OUT/evaluation.{md,csv,json}. `batch_options` go to `glimpse.batch.run`. With
    `faithfulness` (options of `faithfulness.faithfulness_curve`, e.g. {"baseline": "mean"}), every
    explanation's deletion and insertion curves are scored too (kept in OUT/faithfulness), with
    `faithfulness_progress(finished, total)` called as they are."""
    from ..batch import read_table, run

    folder = Path(out)
    run(input, folder / "batch", methods=methods, **batch_options)
    rows = read_table(folder / "batch").to_pylist()
    if faithfulness is not None:
        add_faithfulness(folder, rows, faithfulness, batch_options.get("model"), batch_options.get("device", "auto"),
                         faithfulness_progress)
    report = summarise(rows, list(methods), reference)
    report.write(folder)
    return report


def add_faithfulness(folder: Path, rows: list[dict[str, Any]], options: dict[str, Any], model: str | None,
                     device: str, progress: Callable[[int, int], None] | None = None) -> None:
    """Each done row's deletion and insertion AUCs (and their random-order baselines), computed once
    and kept in OUT/faithfulness/<item>/<method>.json, so that a rerun reads them back."""
    import glimpse

    from ..batch import load_explanation
    from ..batch.store import item_key, method_file, write_atomic
    from .faithfulness import faithfulness_curve

    loaded = None
    done = [row for row in rows if row["status"] == "done"]
    for finished, row in enumerate(done, 1):
        path = folder / "faithfulness" / item_key(row["id"]) / f"{method_file(row['method'])}.json"
        if path.is_file():
            scores = json.loads(path.read_text())
        else:
            loaded = loaded or glimpse.load(model, device=device)
            explanation = load_explanation(folder / "batch", row["id"], row["method"])
            scores = {}
            for kind in ("deletion", "insertion"):
                curve = faithfulness_curve(loaded.model, loaded.processor, explanation, kind, **options)
                scores.update({f"{kind}_auc": curve.auc, f"{kind}_random_auc": curve.random_auc})
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"options": options, **scores}).encode())
        row.update({k: v for k, v in scores.items() if k in METRICS})
        if progress is not None:
            progress(finished, len(done))
