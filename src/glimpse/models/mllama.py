"""Mllama / Llama 3.2 Vision (`MllamaForConditionalGeneration`): the image enters only by cross-attention.

The text holds one `<|image|>` placeholder per image; the image itself never becomes sequence
tokens. The vision tower turns each image into max_tiles x (1 CLS + n x n patches) vision tokens,
and the language model's cross-attention layers (`text_config.cross_attention_layers`) let the text
attend to them: their keys are [images x max_tiles x (1 + n^2)], in that order. So an image's
ImageTiles index that key axis (`positions_axis = VISION_KEYS`): one tile per USED tile (the
processor's arrangement, from `aspect_ratio_ids`; `aspect_ratio_mask` marks the used tiles, the
rest are zero padding), the per-tile CLS dropped, the n x n patches row-major.

Geometry (MllamaImageProcessor): the image is resized, aspect kept, to fit a canvas of rows x cols
tiles (`get_image_size_fit_to_canvas`), placed at the canvas' top-left corner and zero-padded to
the right and bottom, then cut into tiles row-major. A tile's box is its canvas square mapped back
through that resize; tiles past the resized image extend beyond the original image (padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image
from transformers.models.mllama.image_processing_pil_mllama import (
    get_all_supported_aspect_ratios,
    get_image_size_fit_to_canvas,
)

from ..errors import CaptureError
from ..layout import VISION_KEYS, Box, ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .grids import PixelPatch, grid_patches


class MllamaAdapter(Adapter):
    family = "mllama"
    architectures = ("MllamaForConditionalGeneration",)
    pixel_blocks = True
    cross_attention_images = True

    def cross_attention_layers(self) -> tuple[int, ...]:
        return tuple(int(layer) for layer in self.model.config.text_config.cross_attention_layers)

    def with_answer(self, inputs: dict[str, torch.Tensor], answer_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        out = super().with_answer(inputs, answer_ids)
        mask = inputs.get("cross_attention_mask")
        if mask is not None:
            # Answer tokens see the images the last prompt token sees: what generate() does each step.
            out["cross_attention_mask"] = torch.cat([mask, mask[:, -1:].expand(-1, len(answer_ids), -1, -1)], 1)
        return out

    def layout(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image], prompt_text: str,
               question: str, n_answer: int) -> SequenceLayout:
        # The <|image|> placeholders are where the images sit in the text (attention sinks precede them).
        anchors = self.image_token_positions(inputs)
        return replace(super().layout(inputs, images, prompt_text, question, n_answer), image_anchors=tuple(anchors))

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        pixels = inputs["pixel_values"]  # [1, images, max_tiles, 3, tile, tile]
        if pixels.shape[1] != len(images):
            raise CaptureError(f"pixel_values holds {pixels.shape[1]} images for {len(images)} given")
        side = self._side(pixels)
        max_tiles, per_tile = pixels.shape[2], side * side + 1  # + 1: each tile's CLS key comes first
        layouts = []
        for index, image in enumerate(images):
            rows, cols = self._arrangement(inputs, index)
            boxes = _tile_boxes(image.width, image.height, rows, cols, pixels.shape[-1])
            tiles = []
            for tile, box in enumerate(boxes):
                first = (index * max_tiles + tile) * per_tile + 1
                tiles.append(ImageTile(side, side, box, tuple(range(first, first + side * side))))
            layouts.append(ImageLayout(image.width, image.height, tuple(tiles), VISION_KEYS))
        return layouts

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        pixels = inputs["pixel_values"]
        side, size = self._side(pixels), pixels.shape[-1]
        # Frame (sample 0, image, tile): the used tiles of each image, in layout order.
        return [patch for index, image in enumerate(layout.images) for tile in range(len(image.tiles))
                for patch in grid_patches((0, index, tile), side, side, size, size)]

    def _side(self, pixels: torch.Tensor) -> int:
        """Patches along a tile's side; the tile the processor cut must be the vision tower's."""
        vision = self.model.config.vision_config
        if pixels.shape[-1] != vision.image_size or pixels.shape[-2] != vision.image_size:
            raise CaptureError(f"the processor's {tuple(pixels.shape[-2:])} tiles are not the vision tower's "
                               f"{vision.image_size} px; the processor and model configuration disagree")
        return vision.image_size // vision.patch_size

    def _arrangement(self, inputs: dict[str, torch.Tensor], index: int) -> tuple[int, int]:
        """(rows, cols) of image `index`'s tiles, from its aspect-ratio id (1-based into the processor's list)."""
        max_tiles = self.processor.image_processor.max_image_tiles
        ratio = int(inputs["aspect_ratio_ids"][0, index])
        rows, cols = get_all_supported_aspect_ratios(max_tiles)[ratio - 1]
        used = int(inputs["aspect_ratio_mask"][0, index].sum())
        if used != rows * cols:
            raise CaptureError(f"image {index}: aspect ratio id {ratio} means {rows}x{cols} tiles, but "
                               f"aspect_ratio_mask marks {used} as used")
        return rows, cols


def _tile_boxes(width: int, height: int, rows: int, cols: int, tile: int) -> list[Box]:
    """Row-major boxes, in original pixels, of the rows x cols tiles of Mllama's canvas: the image
    resized (aspect kept, the processor's own rounding) at the top-left corner, zero padding after."""
    new_h, new_w = get_image_size_fit_to_canvas(height, width, rows * tile, cols * tile, tile)
    sx, sy = width / int(new_w), height / int(new_h)  # plain floats: numpy scalars would leak into the saved JSON
    return [(c * tile * sx, r * tile * sy, (c + 1) * tile * sx, (r + 1) * tile * sy)
            for r in range(rows) for c in range(cols)]
