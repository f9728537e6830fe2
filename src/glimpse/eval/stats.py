"""The statistics an evaluation table needs: a mean with its bootstrap 95% interval, and a paired
test of two methods scored on the same items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GlimpseError

RESAMPLES = 10_000


@dataclass(frozen=True)
class Estimate:
    """A mean over `n` items with its percentile bootstrap interval [low, high] at `level`."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_mean(values: np.ndarray, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """The mean of `values` (NaN ignored: items without the metric) and its percentile bootstrap
    interval from `resamples` resamples of the items."""
    data = _finite(values)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(data.mean()), float(low), float(high), len(data), level)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> float:
    """Two-sided p-value of a paired bootstrap test that the mean difference a - b is 0, over the
    items both score (NaN in either drops the pair): the differences are centred on 0 (the null)
    and resampled; p is the share of resampled means at least as far from 0 as the observed one
    (with the observed one counted, so p > 0)."""
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.shape != second.shape:
        raise GlimpseError(f"a paired test needs the same items: {first.shape} against {second.shape} scores")
    kept = np.isfinite(first) & np.isfinite(second)
    differences = _finite(first[kept] - second[kept])
    observed = abs(differences.mean())
    centred = differences - differences.mean()
    rng = np.random.default_rng(seed)
    means = centred[rng.integers(0, len(centred), size=(resamples, len(centred)))].mean(1)
    return float((np.sum(np.abs(means) >= observed - 1e-15) + 1) / (resamples + 1))


def _finite(values: np.ndarray) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[np.isfinite(data)]
    if len(data) == 0:
        raise GlimpseError("no item has this score: nothing to average")
    return data


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The area under the ROC curve of scores that should rank `positives` above `negatives`: the
    share of (positive, negative) pairs ordered so, ties counting half."""
    first, second = _finite(positives), np.sort(_finite(negatives))
    below = np.searchsorted(second, first, side="left")
    not_above = np.searchsorted(second, first, side="right")
    return float((below + not_above).sum() / (2 * first.size * second.size))


def bootstrap_auroc(positives: np.ndarray, negatives: np.ndarray, level: float = 0.95, resamples: int = 2_000,
                    seed: int = 0) -> Estimate:
    """The AUROC with a percentile bootstrap interval, both groups resampled apart."""
    first, second = _finite(positives), _finite(negatives)
    rng = np.random.default_rng(seed)
    values = [auroc(first[rng.integers(0, first.size, first.size)], second[rng.integers(0, second.size, second.size)])
              for _ in range(resamples)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Estimate(auroc(first, second), float(low), float(high), first.size + second.size, level)
