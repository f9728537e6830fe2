"""Gemma 3 (`Gemma3ForConditionalGeneration`): one block of image tokens per image and per crop.

The chat template writes `<start_of_image>` per image; the processor expands each into
"\\n\\n<start_of_image>" + mm_tokens_per_image x `<image_soft_token>` + "<end_of_image>\\n\\n". The
vision tower sees the whole image stretched to its square (no crop, no pad); its patches are
average-pooled into a row-major s x s grid, s = sqrt(mm_tokens_per_image). Image tokens attend
BIDIRECTIONALLY within their own block (token_type_ids 1), causally otherwise.

Pan-and-scan (`do_pan_and_scan`) additionally cuts an elongated image into n crops side by side (a
1 x n row for a landscape image, n x 1 for a portrait one) of ceil(side / n) pixels, the last one
cut at the image's edge; the text becomes "Here is the original image <block> and here are some
crops ... <block> <block> ...". Each crop is its own block and frame of pixel_values, after the
whole image's, and here its own tile whose box is its region of the original image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import CaptureError
from ..layout import Box, ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .grids import PixelPatch, block_pairs, frame_per_tile_patches, split_image_runs


class Gemma3Adapter(Adapter):
    family = "gemma3"
    architectures = ("Gemma3ForConditionalGeneration",)
    pixel_blocks = True
    prefix_lm = True  # each image block attends to itself bidirectionally

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        side = self._side()
        positions = self.image_token_positions(inputs)
        blocks = len(positions) // (side * side)
        # Without crops every image is one block; only otherwise ask how the processor cut each image.
        crops = [0] * len(images) if blocks == len(images) else [self._crop_count(image) for image in images]
        boxes = [[_whole(image)] + _crop_boxes(image.width, image.height, n) for image, n in zip(images, crops)]
        runs = iter(split_image_runs(positions, [side * side] * sum(map(len, boxes))))
        return [ImageLayout(image.width, image.height,
                            tuple(ImageTile(side, side, box, next(runs)) for box in image_boxes))
                for image, image_boxes in zip(images, boxes)]

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        # pixel_values holds each image and then its crops, in layout order, one frame per tile.
        return frame_per_tile_patches(inputs["pixel_values"], layout, self._side(), self._side())

    def bidirectional_pairs(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        return block_pairs(layout.length, [tile.positions for image in layout.images for tile in image.tiles])

    def _side(self) -> int:
        side = math.isqrt(self.model.config.mm_tokens_per_image)
        if side * side != self.model.config.mm_tokens_per_image:
            raise CaptureError(f"mm_tokens_per_image = {self.model.config.mm_tokens_per_image} is not a square grid")
        return side

    def _crop_count(self, image: Image.Image) -> int:
        """How many pan-and-scan crops the processor cuts `image` into, with the very settings it
        encodes prompts with (the processor does not return them): its blocks for this image alone."""
        side = self._side()
        ids = self.processor(images=[image], text=self.processor.boi_token, return_tensors="pt")["input_ids"][0]
        return int((ids == self.model.config.image_token_id).sum()) // (side * side) - 1


def _whole(image: Image.Image) -> Box:
    return (0.0, 0.0, float(image.width), float(image.height))


def _crop_boxes(width: int, height: int, n: int) -> list[Box]:
    """The n pan-and-scan crops of a width x height image, in the processor's order (module docstring)."""
    if n == 0:
        return []
    if width >= height:
        step = math.ceil(width / n)
        return [(float(i * step), 0.0, float(min((i + 1) * step, width)), float(height)) for i in range(n)]
    step = math.ceil(height / n)
    return [(0.0, float(i * step), float(width), float(min((i + 1) * step, height))) for i in range(n)]
