"""LLaVA-1.5 (`LlavaForConditionalGeneration`): one contiguous run of image tokens per image.

Each image becomes a row-major grid of (crop height / patch) x (crop width / patch) tokens (the
CLS token is dropped by the "default" feature strategy); the grid covers the processor's view of
the image (optional pad to square, resize, centre crop), which `geometry` maps back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import CaptureError
from ..layout import ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .geometry import pad_resize_crop_box
from .grids import PixelPatch, grid_patches


class LlavaAdapter(Adapter):
    family = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    pixel_blocks = True

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        positions = self.image_token_positions(inputs)
        _, _, height, width = inputs["pixel_values"].shape
        patch = self.model.config.vision_config.patch_size
        rows, cols = height // patch, width // patch
        per_image = rows * cols
        if len(positions) != per_image * len(images):
            raise CaptureError(
                f"found {len(positions)} image tokens for {len(images)} image(s) of {rows}x{cols} patches; "
                "the processor and model configuration disagree")
        box = self._view_box(images)
        return [ImageLayout(image.width, image.height,
                            (ImageTile(rows, cols, box(image), tuple(positions[i * per_image:(i + 1) * per_image])),))
                for i, image in enumerate(images)]

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        # pixel_values is 4-D [images, 3, H, W]: the frame index is the image's index.
        _, _, height, width = inputs["pixel_values"].shape
        return [patch for index, image in enumerate(layout.images)
                for patch in grid_patches(index, image.tiles[0].rows, image.tiles[0].cols, height, width)]

    def _view_box(self, images):
        ip = self.processor.image_processor

        def box(image: Image.Image):
            return pad_resize_crop_box(
                image.width, image.height, pad_to_square=bool(getattr(ip, "do_pad", False)),
                size=ip.size if getattr(ip, "do_resize", True) else None,
                crop=ip.crop_size if getattr(ip, "do_center_crop", False) else None)
        return box
