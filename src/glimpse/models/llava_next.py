"""LLaVA-NeXT and LLaVA-OneVision: a base view, then the anyres high-res grid with a newline per row.

Per image the processor makes a base view (the whole image resized to the base size, aspect ignored)
and a canvas from `image_grid_pinpoints` holding the image resized to fit (aspect kept) and centred
with padding, cut into tiles. `pixel_values` is [images, tiles, 3, H, W] with the base view as tile 0.
The model lays the tiles' token grids side by side into one mosaic, drops the mosaic rows or columns
that are mostly padding, LLaVA-OneVision then downsamples the rest bilinearly when it holds more
than `anyres_max_N` tiles' worth of tokens, and a learnt newline token follows each row. All of
these are `<image>` tokens; the newlines carry no pixels and are left out of the layout.

Rather than restating that arithmetic, the adapter runs it: the model's own `pack_image_features`
is fed, instead of features, one-hot channels naming each token's mosaic row and column. What comes
back says, for every packed token, the weight it takes from each mosaic row and column (one-hot, or
bilinear neighbours when downsampled); newlines come back as zeros.

Each image becomes two tiles: the base grid over the base view's box, and the high-res grid over
the box its kept mosaic rows and columns cover in the original image. LLaVA-OneVision shows each
image of a multi-image sample (`batch_num_images` > 1) as a base view only, padded to a square.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

from ..errors import CaptureError
from ..layout import Box, ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .geometry import fit_pad_box, pad_resize_crop_box, resized_shape, squash_box
from .grids import PixelPatch, grid_patches, split_image_runs


@dataclass(frozen=True)
class _Packed:
    """One image's packed tokens, traced: base grid first, then the high-res grid."""

    base: int  # tokens of the base grid (g x g), first in the image's run
    length: int  # all its tokens, newlines included
    tiles: tuple[int, int]  # (rows, cols) of anyres tiles; (0, 0) for a base view alone
    hires: torch.Tensor  # offsets (from the image's first token) of the high-res tokens, row-major
    shape: tuple[int, int]  # (rows, cols) of the high-res grid after unpadding and downsampling
    rows: torch.Tensor  # [tokens, mosaic rows]: weight each high-res token takes from each mosaic row
    cols: torch.Tensor  # [tokens, mosaic cols]


class LlavaNextAdapter(Adapter):
    family = "llava-next"
    architectures = ("LlavaNextForConditionalGeneration",)
    pixel_blocks = True

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        positions = self.image_token_positions(inputs)
        packs, unscaled = self._packs(inputs, downsample=True), self._packs(inputs, downsample=False)
        side = inputs["pixel_values"].shape[-1]
        if len(packs) != len(images):
            raise CaptureError(f"the processor gave {len(packs)} image(s) for {len(images)}")
        runs = split_image_runs(positions, [pack.length for pack in packs])
        g = self._grid()
        layouts = []
        for index, (image, pack, run) in enumerate(zip(images, packs, runs)):
            tiles = [ImageTile(g, g, self._base_box(image, tiled=pack.shape != (0, 0)), run[:pack.base])]
            if pack.shape != (0, 0):
                hires = tuple(run[k] for k in pack.hires.tolist())
                tiles.append(ImageTile(*pack.shape, self._hires_box(image, unscaled[index], side), hires))
            layouts.append(ImageLayout(image.width, image.height, tuple(tiles)))
        return layouts

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        height, width = inputs["pixel_values"].shape[-2:]
        g = self._grid()
        ph, pw = height // g, width // g
        patches: list[PixelPatch] = []
        for index, pack in enumerate(self._packs(inputs, downsample=True)):
            patches += grid_patches((index, 0), g, g, height, width)
            if pack.shape == (0, 0):
                continue
            # A token blending mosaic cells of several tiles keeps the tile of its heaviest cell.
            row_tile, col_tile = pack.rows.argmax(1) // g, pack.cols.argmax(1) // g
            (y0, y1), (x0, x1) = _cells_in_tile(pack.rows, row_tile, g), _cells_in_tile(pack.cols, col_tile, g)
            frames = 1 + row_tile * pack.tiles[1] + col_tile
            patches += [((index, f), a * ph, b * ph, c * pw, d * pw)
                        for f, a, b, c, d in zip(*(t.tolist() for t in (frames, y0, y1, x0, x1)))]
        return patches

    # --- tracing ------------------------------------------------------------------------------
    def _grid(self) -> int:
        vision = self.model.config.vision_config
        return vision.image_size // vision.patch_size

    def _tiled(self, inputs: dict[str, torch.Tensor]) -> list[bool]:
        """Whether each image has anyres tiles (LLaVA-NeXT: always)."""
        return [True] * len(inputs["image_sizes"])

    def _pack(self, features: torch.Tensor, image_size: torch.Tensor, newline: torch.Tensor,
              downsample: bool) -> torch.Tensor:
        config = self.model.config  # LLaVA-NeXT never downsamples: `downsample` is for OneVision
        packed, _ = self.model.model.pack_image_features(
            [features], image_size[None], config.vision_feature_select_strategy, image_newline=newline)
        return packed[0]

    def _packs(self, inputs: dict[str, torch.Tensor], downsample: bool) -> list[_Packed]:
        g = self._grid()
        tile_side = self.model.config.vision_config.image_size
        packs = []
        for size, tiled in zip(inputs["image_sizes"], self._tiled(inputs)):
            rows, cols = (get_anyres_image_grid_shape(size.tolist(), self.model.config.image_grid_pinpoints, tile_side)
                          if tiled else (0, 0))
            features = _mosaic_one_hot(rows, cols, g)
            packed = self._pack(features, size, torch.zeros(features.shape[-1]), downsample)
            real = torch.nonzero(packed[g * g:, 0] > 0.5).flatten() + g * g
            newlines = len(packed) - g * g - len(real)
            shape = (newlines, len(real) // newlines) if len(real) else (0, 0)
            weights = packed[real, 1:]
            packs.append(_Packed(g * g, len(packed), (rows, cols), real, shape,
                                 weights[:, :rows * g], weights[:, rows * g:]))
        return packs

    # --- geometry -----------------------------------------------------------------------------
    def _base_box(self, image: Image.Image, tiled: bool) -> Box:
        ip = self.processor.image_processor
        crop = ip.crop_size if getattr(ip, "do_center_crop", False) else None
        if not tiled:  # LLaVA-OneVision's multi-image view
            return pad_resize_crop_box(image.width, image.height, pad_to_square=True, size=ip.size, crop=crop)
        return squash_box(image.width, image.height, size=ip.size, crop=crop)

    def _hires_box(self, image: Image.Image, unscaled: _Packed, side: int) -> Box:
        """The canvas rectangle the kept mosaic cells cover, in original coordinates. Downsampling
        keeps that extent, so it is read from a trace without downsampling (`unscaled`)."""
        ip = self.processor.image_processor
        if resized_shape(side, side, ip.size) != (side, side) or side != self.model.config.vision_config.image_size:
            raise CaptureError("the anyres tiles are resized or cropped after cutting; glimpse does not support "
                               "this processor geometry")
        cell = side / self._grid()
        (y0, y1), (x0, x1) = _extent(unscaled.rows), _extent(unscaled.cols)
        canvas = select_best_resolution((image.height, image.width), ip.image_grid_pinpoints)
        return fit_pad_box(image.width, image.height, canvas, (x0 * cell, y0 * cell, x1 * cell, y1 * cell))


class LlavaOnevisionAdapter(LlavaNextAdapter):
    family = "llava-onevision"
    architectures = ("LlavaOnevisionForConditionalGeneration",)

    def _tiled(self, inputs: dict[str, torch.Tensor]) -> list[bool]:
        counts = inputs.get("batch_num_images")
        if counts is None:
            return super()._tiled(inputs)
        return [int(n) == 1 for n in counts.tolist() for _ in range(int(n))]

    def _pack(self, features: torch.Tensor, image_size: torch.Tensor, newline: torch.Tensor,
              downsample: bool) -> torch.Tensor:
        # No downsampling: a cap on tiles no image reaches.
        aspect = self.model.config.vision_aspect_ratio if downsample else "anyres_max_1000000"
        packed, _ = self.model.model.pack_image_features([features], image_size[None], image_newline=newline,
                                                         vision_aspect_ratio=aspect)
        return packed[0]


def _mosaic_one_hot(rows: int, cols: int, g: int) -> torch.Tensor:
    """Stand-in features [1 + rows * cols, g * g, 1 + rows * g + cols * g] for one image: channel 0
    marks a token (newlines get 0), then one-hot mosaic row, then one-hot mosaic column. Tile 0
    (the base view) only needs channel 0: the base grid is packed first, as it is."""
    height, width = rows * g, cols * g
    features = torch.zeros(1 + rows * cols, g * g, 1 + height + width)
    features[..., 0] = 1
    k = torch.arange(g * g)
    for tile in range(rows * cols):
        features[1 + tile, k, 1 + (tile // cols) * g + k // g] = 1
        features[1 + tile, k, 1 + height + (tile % cols) * g + k % g] = 1
    return features


def _extent(weights: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) of the mosaic cells any token takes weight from."""
    used = torch.nonzero(weights.abs().sum(0) > 0).flatten()
    return int(used[0]), int(used[-1]) + 1


def _cells_in_tile(weights: torch.Tensor, tile: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, [first, last + 1) of the cells (within a tile's g cells) it takes weight from in `tile`."""
    cell = torch.arange(weights.shape[1])
    used = (weights != 0) & (cell // g == tile[:, None])
    first = torch.where(used, cell, weights.shape[1]).min(1).values
    last = torch.where(used, cell, -1).max(1).values
    return first % g, last % g + 1
