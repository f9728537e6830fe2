"""Idefics3 and SmolVLM: tiles row-major, then a global view, each its own run of `<image>` tokens.

The image processor resizes the image (longest edge to `size`), stretches the whole of it onto a
canvas of rows x cols tiles of `max_image_size` (no crop, no pad) and cuts it; the global view, the
whole image squashed to one tile, comes last. An image no larger than one tile is the global view
alone. In the text each tile is `<fake_token_around_image><row_i_col_j>` + seq_len `<image>` (rows
end with a newline), the global view `<fake_token_around_image><global-img>` + seq_len `<image>`.
`pixel_values` is [samples, frames, 3, H, W]: one prompt's images are all frames of sample 0, in
this order. Within a frame, the connector's pixel shuffle keeps the patches' row-major order, so
its seq_len tokens form a row-major s x s grid, s = (image_size / patch_size) / scale_factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from transformers import ProcessorMixin

from ..errors import CaptureError
from ..layout import ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .geometry import grid_boxes
from .grids import PixelPatch, grid_patches


class Idefics3Adapter(Adapter):
    family = "idefics3"
    architectures = ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration")
    pixel_blocks = True

    def apply_chat_template(self, messages: list[dict]) -> str:
        # SmolVLMProcessor's own apply_chat_template reads video_processor.num_frames even for
        # images only; the generic implementation renders the same text for image prompts.
        return ProcessorMixin.apply_chat_template(self.processor, messages, add_generation_prompt=True,
                                                  tokenize=False)

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        side = self._grid()
        per_frame = side * side
        boxes = [self._frame_boxes(image) for image in images]
        positions = self.image_token_positions(inputs)
        frames = sum(len(b) for b in boxes)
        if len(positions) != frames * per_frame:
            raise CaptureError(f"found {len(positions)} image tokens where the processor's tiling gives {frames} "
                               f"frames of {per_frame}; the processor and model configuration disagree")
        layouts, start = [], 0
        for image, image_boxes in zip(images, boxes):
            tiles = []
            for box in image_boxes:
                tiles.append(ImageTile(side, side, box, tuple(positions[start:start + per_frame])))
                start += per_frame
            layouts.append(ImageLayout(image.width, image.height, tuple(tiles)))
        return layouts

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        height, width = inputs["pixel_values"].shape[-2:]
        side = self._grid()
        frames = sum(len(image.tiles) for image in layout.images)
        # One prompt is sample 0; its frames follow the layout's tile order.
        return [patch for frame in range(frames) for patch in grid_patches((0, frame), side, side, height, width)]

    def _grid(self) -> int:
        config = self.model.config
        return config.vision_config.image_size // config.vision_config.patch_size // config.scale_factor

    def _frame_boxes(self, image: Image.Image):
        """Boxes of the image's frames in the processor's order: tiles row-major, global view last."""
        _, rows, cols = self.processor.image_processor.get_number_of_image_patches(image.height, image.width)
        whole = (0.0, 0.0, float(image.width), float(image.height))
        return (grid_boxes(image.width, image.height, rows, cols) if rows * cols else []) + [whole]
