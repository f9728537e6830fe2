"""Localisation metrics of a map against a ground-truth evidence mask on the original image."""

from __future__ import annotations

import numpy as np

from ..explanation import Explanation


def pointing_game(explanation: Explanation, mask: np.ndarray, image: int = 0, token: int | None = None) -> bool:
    """True when the image token with the highest score covers at least one evidence pixel.

    Scored on the token grid (the method's own resolution), through each tile's box on the
    original image, so upsampling cannot move the maximum.
    """
    layout = explanation.layouts[image]
    scores = explanation.image_scores(image, token)
    best = int(np.argmax(scores))
    for tile in layout.tiles:
        n = tile.rows * tile.cols
        if best < n:
            row, col = divmod(best, tile.cols)
            x0, y0, x1, y1 = tile.box
            cw, ch = (x1 - x0) / tile.cols, (y1 - y0) / tile.rows
            top, left = max(0, int(np.floor(y0 + row * ch))), max(0, int(np.floor(x0 + col * cw)))
            bottom, right = int(np.ceil(y0 + (row + 1) * ch)), int(np.ceil(x0 + (col + 1) * cw))
            return bool(mask[top:bottom, left:right].any())
        best -= n
    raise ValueError("score index outside every tile")


def energy_in_mask(explanation: Explanation, mask: np.ndarray, image: int = 0, token: int | None = None) -> float:
    """Share of the map's positive mass (at image resolution) that falls on evidence pixels."""
    values = np.clip(explanation.visual_map(image, token, resolution="image"), 0, None)
    total = float(values.sum())
    return float(values[mask].sum() / total) if total > 0 else 0.0
