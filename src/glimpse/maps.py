"""Token-grid scores to maps on the original image, through each tile's box."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import GlimpseError
from .layout import ImageLayout, ImageTile

NORMALISATIONS = ("minmax", "percentile")  # how `normalise` scales a map to [0, 1]


def tile_grids(layout: ImageLayout, scores: np.ndarray) -> list[np.ndarray]:
    """Split one image's token scores (in layout order) into a (rows, cols) array per tile."""
    grids, start = [], 0
    for tile in layout.tiles:
        n = tile.rows * tile.cols
        grids.append(np.asarray(scores[start:start + n], dtype=np.float32).reshape(tile.rows, tile.cols))
        start += n
    return grids


def to_image(layout: ImageLayout, scores: np.ndarray) -> np.ndarray:
    """Bilinear map at the original image's resolution (height, width).

    Each tile's grid is sampled at the centre of every original pixel its box covers; where tiles
    overlap their values are averaged; pixels no tile covers (cropped away) are 0.
    """
    total = torch.zeros(layout.height, layout.width)
    count = torch.zeros(layout.height, layout.width)
    for tile, grid in zip(layout.tiles, tile_grids(layout, scores)):
        values, inside = _sample_tile(tile, torch.from_numpy(grid), layout.width, layout.height)
        total += values * inside
        count += inside
    return (total / count.clamp(min=1)).numpy()


def coverage(layout: ImageLayout) -> np.ndarray:
    """Boolean (height, width): the pixels the model saw through at least one tile."""
    seen = torch.zeros(layout.height, layout.width, dtype=torch.bool)
    for tile in layout.tiles:
        seen |= _inside(tile, layout.width, layout.height)
    return seen.numpy()


def _centres(tile: ImageTile, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    x0, y0, x1, y1 = tile.box
    gx = 2 * (torch.arange(width) + 0.5 - x0) / (x1 - x0) - 1
    gy = 2 * (torch.arange(height) + 0.5 - y0) / (y1 - y0) - 1
    return gx, gy


def _inside(tile: ImageTile, width: int, height: int) -> torch.Tensor:
    gx, gy = _centres(tile, width, height)
    return (gy.abs() <= 1)[:, None] & (gx.abs() <= 1)[None, :]


def _sample_tile(tile: ImageTile, grid: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gy = _centres(tile, width, height)
    coords = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None].float()
    values = F.grid_sample(grid[None, None].float(), coords, mode="bilinear", padding_mode="border",
                           align_corners=False)[0, 0]
    return values, _inside(tile, width, height).float()


def normalise(values: np.ndarray, mask: np.ndarray | None = None, normalisation: str = "minmax",
              percentile: float = 99.0) -> np.ndarray:
    """To [0, 1] over `mask` (all pixels if None), from the region's minimum up to its maximum
    ("minmax") or up to its `percentile`-th percentile ("percentile"), clipping the few values above
    to 1 so that one outlier cannot wash out the rest of the map. A constant map becomes all zeros."""
    if normalisation not in NORMALISATIONS:
        raise GlimpseError(f"normalisation must be one of {', '.join(map(repr, NORMALISATIONS))}, got {normalisation!r}")
    if not 0 < percentile <= 100:
        raise GlimpseError(f"percentile must be in (0, 100], got {percentile!r}")
    region = values if mask is None else values[mask]
    if region.size == 0:
        return np.zeros_like(values, dtype=np.float32)
    low = float(region.min())
    high = float(region.max()) if normalisation == "minmax" else float(np.percentile(region, percentile))
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return np.clip((values - low) / (high - low), 0, 1).astype(np.float32)
