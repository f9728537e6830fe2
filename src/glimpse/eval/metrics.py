"""Metrics of a map on the original image: localisation against a ground-truth evidence mask
(pointing game, energy in mask) and agreement with human fixations (NSS, CC)."""

from __future__ import annotations

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


def _maps(saliency: np.ndarray, human: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, weights = np.asarray(saliency, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if weights.shape != values.shape or values.ndim != 2:
        raise GlimpseError(f"the human map is {_size(weights)} (width x height), the saliency map {_size(values)}: "
                           "give both at the image's resolution")
    if weights.min() < 0 or weights.sum() <= 0:
        raise GlimpseError("a human map needs non-negative values and at least one fixation")
    return values, weights


def _size(array: np.ndarray) -> str:
    return "x".join(str(n) for n in array.shape[::-1])
