"""Metrics of a map on the original image: localisation against a ground-truth evidence mask or box
(pointing game, energy in mask) and agreement with human fixations (NSS, CC, KL, SIM, AUC-Judd,
AUC-Borji, shuffled AUC), following the MIT saliency benchmark's definitions; and of the prompt words'
scores against human gaze on the question's words (Pearson, Spearman)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GlimpseError
from ..explanation import Explanation
from ..layout import ImageLayout


def token_cells(layout: ImageLayout) -> list[tuple[int, int, int, int]]:
    """Pixel rectangle (top, left, bottom, right) of the original image under each image token,
    in layout order, clipped to the image (empty where a token sees only padding)."""
    cells = []
    for tile in layout.tiles:
        x0, y0, x1, y1 = tile.box
        cw, ch = (x1 - x0) / tile.cols, (y1 - y0) / tile.rows
        for row in range(tile.rows):
            for col in range(tile.cols):
                top, left = max(0, int(np.floor(y0 + row * ch))), max(0, int(np.floor(x0 + col * cw)))
                bottom = min(layout.height, int(np.ceil(y0 + (row + 1) * ch)))
                right = min(layout.width, int(np.ceil(x0 + (col + 1) * cw)))
                cells.append((top, left, bottom, right))
    return cells


def touches(mask: np.ndarray, cell: tuple[int, int, int, int]) -> bool:
    top, left, bottom, right = cell
    return bool(mask[top:bottom, left:right].any())


def pointing_game(explanation: Explanation, mask: np.ndarray, image: int = 0, token: int | None = None) -> bool:
    """True when the image token with the highest score covers at least one evidence pixel.

    Scored on the token grid (the method's own resolution), through each tile's box on the
    original image, so upsampling cannot move the maximum.
    """
    best = int(np.argmax(explanation.image_scores(image, token)))
    return touches(mask, token_cells(explanation.layouts[image])[best])


def pointing_chance(layout: ImageLayout, mask: np.ndarray) -> float:
    """The pointing game's chance level: the share of image tokens whose cell touches the mask."""
    cells = token_cells(layout)
    return sum(touches(mask, c) for c in cells) / len(cells)


def energy_in_mask(explanation: Explanation, mask: np.ndarray, image: int = 0, token: int | None = None) -> float:
    """Share of the map's positive mass (at image resolution) that falls on evidence pixels."""
    values = np.clip(explanation.visual_map(image, token, resolution="image"), 0, None)
    total = float(values.sum())
    return float(values[mask].sum() / total) if total > 0 else 0.0


def box_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """The [height, width] bool mask of a box [x0, y0, x1, y1] in image pixels, for `pointing_game`
    and `energy_in_mask`: from the floor of its start to the ceiling of its end, clipped to the
    image. A box that covers no pixel of the image is refused."""
    x0, y0, x1, y1 = box
    mask = np.zeros((height, width), dtype=bool)
    mask[_span(y0, y1, height), _span(x0, x1, width)] = True
    if not mask.any():
        raise GlimpseError(f"the box {list(box)} covers no pixel of the {width}x{height} image")
    return mask


def _span(start: float, end: float, size: int) -> slice:
    return slice(int(np.clip(np.floor(start), 0, size)), int(np.clip(np.ceil(end), 0, size)))


def nss(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """Normalized scanpath saliency of a 2-D map: the map standardised (zero mean, unit standard
    deviation over the pixels), averaged over the fixated pixels, each weighted by its value in
    `fixations` (same shape: True / 1 at fixations, or fixation counts, or a density). A constant
    map scores 0."""
    values, weights = _maps(saliency, fixations)
    spread = values.std()
    if spread == 0:
        return 0.0
    return float((((values - values.mean()) / spread) * weights).sum() / weights.sum())


def cc(saliency: np.ndarray, human: np.ndarray) -> float:
    """Pearson's correlation of a 2-D map with a human map of the same shape (a fixation density,
    an attention map); 0 when either is constant."""
    values, weights = _maps(saliency, human)
    if values.std() == 0 or weights.std() == 0:
        return 0.0
    return float(np.corrcoef(values.ravel(), weights.ravel())[0, 1])


EPS = 2.2204e-16  # the MIT saliency benchmark's regulariser of KL (Matlab's eps, as pysaliency writes it)


def kl_div(saliency: np.ndarray, human: np.ndarray) -> float:
    """KL divergence of a human map (a fixation density, an attention map) from a 2-D map, as the MIT
    benchmark computes it: both scaled to sum 1, then sum(h * log(EPS + h / (s + EPS))). The MIT code
    takes maps as non-negative; as in pysaliency, a map with negative values is first shifted by its
    minimum, and one that sums to 0 counts as uniform (where the MIT code would leave it zero).
    0 for equal distributions; lower is better."""
    values, weights = _maps(saliency, human)
    values = values - min(values.min(), 0.0)
    total = values.sum()
    density = values / total if total > 0 else np.full_like(values, 1 / values.size)
    human_density = weights / weights.sum()
    return float((human_density * np.log(EPS + human_density / (density + EPS))).sum())


def sim(saliency: np.ndarray, human: np.ndarray) -> float:
    """Similarity (histogram intersection) of a 2-D map with a human map: sum(min(s, h)) of the two
    maps, each shifted by its minimum and scaled to sum 1 as in the MIT benchmark, so that a floor
    under every pixel earns nothing (pysaliency shifts only maps with negative values). 1 for equal
    distributions, 0 for disjoint ones or when either map is constant."""
    values, weights = _maps(saliency, human)
    return float(np.minimum(_mass(values), _mass(weights)).sum())


def _mass(values: np.ndarray) -> np.ndarray:
    values = values - values.min()
    total = values.sum()
    return values / total if total > 0 else values


def auc_judd(saliency: np.ndarray, fixations: np.ndarray) -> float:
    """AUC-Judd: the area under the ROC curve with a threshold at the map's value on each fixated
    pixel, true positives counted over the fixated pixels and false positives over all the others.

    A pixel is fixated where `fixations` (bool or counts) is positive, and counts once however many
    fixations it has, as in the MIT benchmark. The MIT code breaks ties by adding random jitter to
    the map; this gives the exact mean over that jitter instead, so it is deterministic, and equals
    the MIT value on maps without ties (pysaliency's `general_roc(judd=1)` without jitter gives
    tied pixels less). Equivalently: each unfixated pixel scores (k + 1/2) / n, where k of the n
    fixated pixels rank above it, or 1 below them all; the AUC is their mean.
    """
    values, fixated = _fixated(saliency, fixations)
    positives, negatives = np.sort(values[fixated]), values[~fixated]
    if negatives.size == 0:
        raise GlimpseError("AUC-Judd needs at least one pixel without fixations")
    count = positives.size
    above = count - np.searchsorted(positives, negatives, side="right")
    tied = count - np.searchsorted(positives, negatives, side="left") - above
    # under jitter the number of tied fixated pixels ranking above an unfixated one is uniform on
    # 0..tied; only the case where that puts every fixated pixel above it is capped, at 1
    scores = (above + tied / 2 + 0.5) / count - (above + tied == count) * 0.5 / (count * (tied + 1))
    return float(scores.mean())


def auc_borji(saliency: np.ndarray, fixations: np.ndarray, splits: int = 100, seed: int = 0) -> float:
    """AUC-Borji: the AUC of the map's values on the fixated pixels against as many pixels drawn
    uniformly (with replacement) from the whole map, averaged over `splits` draws; the same seed
    (numpy's `default_rng`) gives the same draws.

    As in the MIT benchmark, the map is rescaled to [0, 1] by its range and the thresholds lie every
    0.1, so values within one band of 0.1 tie (a tie counts half); a fixated pixel counts once.
    A constant map scores 0.5.
    """
    values, fixated = _fixated(saliency, fixations)
    if splits < 1:
        raise GlimpseError(f"AUC-Borji needs at least one split, got {splits}")
    span = values.max() - values.min()
    scaled = (values - values.min()) / (span if span > 0 else 1.0)
    # a ROC swept at thresholds 0, 0.1, ..., 1 is the rank AUC of the number of thresholds each value reaches
    levels = np.searchsorted(np.arange(11) / 10, scaled.ravel(), side="right")
    positives = levels[fixated.ravel()]
    rng = np.random.default_rng(seed)
    return float(np.mean([_rank_auc(positives, levels[rng.integers(levels.size, size=positives.size)])
                          for _ in range(splits)]))


def shuffled_auc(saliency: np.ndarray, fixations: np.ndarray, other_fixations: np.ndarray) -> float:
    """Shuffled AUC (sAUC): the rank AUC (ties count half) of the map's values on this image's fixated
    pixels against its values on the pixels fixated in other images (`other_fixations`, a bool or
    count map of the same shape pooled from them), which discounts the centre bias shared by all
    images. Each fixated pixel counts once. Like pysaliency's sAUC, it uses every shuffled location
    and every threshold, where the MIT code samples as many of them as there are fixations and
    thresholds every 0.1."""
    values, fixated = _fixated(saliency, fixations)
    _, other = _fixated(values, other_fixations)
    return _rank_auc(values[fixated], values[other])


def _rank_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    negatives = np.sort(negatives)
    below = np.searchsorted(negatives, positives, side="left")
    not_above = np.searchsorted(negatives, positives, side="right")
    return float((below + not_above).mean() / (2 * negatives.size))


def prompt_cc(scores: np.ndarray, gaze: np.ndarray) -> float:
    """Pearson's correlation of the prompt words' scores with human gaze on the same words (e.g.
    fixation durations); 0 when either is constant."""
    values, weights = _words(scores, gaze)
    if values.std() == 0 or weights.std() == 0:
        return 0.0
    return float(np.corrcoef(values, weights)[0, 1])


def prompt_spearman(scores: np.ndarray, gaze: np.ndarray) -> float:
    """Spearman's rank correlation of the prompt words' scores with human gaze on them (tied values
    share their mean rank); 0 when either is constant."""
    values, weights = _words(scores, gaze)
    return prompt_cc(_mean_ranks(values), _mean_ranks(weights))


def _words(scores: np.ndarray, gaze: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, weights = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(gaze, dtype=np.float64).ravel()
    if values.size != weights.size or values.size < 2:
        raise GlimpseError(f"{values.size} word score(s) against gaze on {weights.size} word(s): give one gaze value "
                           "per prompt word, at least two words")
    return values, weights


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    return np.bincount(group, ranks)[group] / counts[group]


def fixations_from_map(human: np.ndarray, top: float = 0.1) -> np.ndarray:
    """Boolean fixations from a continuous human attention map: the `top` share of its pixels by
    value (round(top x pixels) of them, at least one), with every pixel tied at the threshold
    included. A pixel at 0 is never a fixation, so a map with fewer non-zero pixels gives fewer."""
    if not 0 < top <= 1:
        raise GlimpseError(f"top is the share of pixels to keep as fixations, in (0, 1]; got {top}")
    values = _human(np.asarray(human, dtype=np.float64))
    keep = max(1, round(top * values.size))
    threshold = np.partition(values.ravel(), values.size - keep)[values.size - keep]
    return (values >= threshold) & (values > 0)


def _fixated(saliency: np.ndarray, fixations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, weights = _maps(saliency, fixations)
    return values, weights > 0


def _maps(saliency: np.ndarray, human: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, weights = np.asarray(saliency, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if weights.shape != values.shape or values.ndim != 2:
        raise GlimpseError(f"the human map is {_size(weights)} (width x height), the saliency map {_size(values)}: "
                           "give both at the image's resolution")
    return values, _human(weights)


def _human(weights: np.ndarray) -> np.ndarray:
    if weights.min() < 0 or weights.sum() <= 0:
        raise GlimpseError("a human map needs non-negative values and at least one fixation")
    return weights


def _size(array: np.ndarray) -> str:
    return "x".join(str(n) for n in array.shape[::-1])
