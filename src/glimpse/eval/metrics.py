"""Localisation metrics of a map against a ground-truth evidence mask on the original image."""

from __future__ import annotations

import numpy as np

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
