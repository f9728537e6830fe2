"""Aya Vision (`AyaVisionForConditionalGeneration`): tiles, then a thumbnail, each a run of `<|IMG_PATCH|>` tokens.

The GotOcr2 image processor stretches the whole image onto the canvas of tiles closest to its aspect
ratio, cuts it row-major and adds a thumbnail (the whole image as one tile) when there is more than
one tile; `pixel_values` holds every image's frames in that order, one per entry. The processor writes
`<|START_OF_IMG|>`, then per tile `TILE_i` and per thumbnail `TILE_GLOBAL`, each followed by its
(image_size / patch / downsample_factor)^2 image tokens, then `<|END_OF_IMG|>`. The projector's pixel
shuffle keeps the patches' row-major order, so each frame's tokens are a row-major s x s grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..layout import ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .geometry import tiles_and_thumbnail_boxes
from .grids import PixelPatch, frame_per_tile_patches, split_image_runs


class AyaVisionAdapter(Adapter):
    family = "aya-vision"
    architectures = ("AyaVisionForConditionalGeneration",)
    pixel_blocks = True

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        side = self._side()
        ip = self.processor.image_processor
        # The processor's own default (crop_to_patches=True) overrides the image processor's attribute.
        crop = bool(self.processor.images_kwargs.get("crop_to_patches", ip.crop_to_patches))
        boxes = [tiles_and_thumbnail_boxes(image.width, image.height, ip, crop) for image in images]
        runs = iter(split_image_runs(self.image_token_positions(inputs), [side * side] * sum(map(len, boxes))))
        return [ImageLayout(image.width, image.height, tuple(ImageTile(side, side, box, next(runs)) for box in frames))
                for image, frames in zip(images, boxes)]

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        # pixel_values holds every image's tiles and thumbnail in layout order, one per entry.
        return frame_per_tile_patches(inputs["pixel_values"], layout, self._side(), self._side())

    def _side(self) -> int:
        config = self.model.config
        return config.vision_config.image_size // config.vision_config.patch_size // config.downsample_factor
