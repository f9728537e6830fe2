"""InternVL (`InternVLForConditionalGeneration`): `<img>` + tiles x `<IMG_CONTEXT>` run + `</img>` per image.

The GotOcr2 image processor picks a canvas of cols x rows tiles whose aspect ratio is closest to the
image's (`get_optimal_tiled_canvas`), stretches the whole image onto it and cuts it into tiles,
row-major; when there is more than one tile a thumbnail (the whole image resized to one tile) comes
last. Each tile is one entry of `pixel_values`; the vision tower's pixel shuffle turns its
(size / patch)^2 patches into a row-major grid of (size / patch * downsample_ratio)^2 tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..layout import ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .geometry import tiles_and_thumbnail_boxes
from .grids import PixelPatch, frame_per_tile_patches, split_image_runs


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    """Vision configs give image and patch sizes as one int or as (height, width)."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class InternVLAdapter(Adapter):
    family = "internvl"
    architectures = ("InternVLForConditionalGeneration",)
    pixel_blocks = True

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        rows, cols = self._tokens_per_tile()
        per_tile = rows * cols
        ip = self.processor.image_processor
        crop = bool(getattr(ip, "crop_to_patches", False))
        boxes = [tiles_and_thumbnail_boxes(image.width, image.height, ip, crop) for image in images]
        positions = self.image_token_positions(inputs)
        runs = split_image_runs(positions, [len(image_boxes) * per_tile for image_boxes in boxes])
        return [ImageLayout(image.width, image.height,
                            tuple(ImageTile(rows, cols, box, run[k * per_tile:(k + 1) * per_tile])
                                  for k, box in enumerate(image_boxes)))
                for image, image_boxes, run in zip(images, boxes, runs)]

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        # pixel_values holds every image's tiles in layout order, one tile per entry.
        return frame_per_tile_patches(inputs["pixel_values"], layout, *self._tokens_per_tile())

    def _tokens_per_tile(self) -> tuple[int, int]:
        config = self.model.config
        (h, w), (ph, pw) = _pair(config.vision_config.image_size), _pair(config.vision_config.patch_size)
        return int(h // ph * config.downsample_ratio), int(w // pw * config.downsample_ratio)
