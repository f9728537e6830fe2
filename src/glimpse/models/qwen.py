"""Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5: one run of `<|image_pad|>` tokens per image.

The image processor resizes each image with `smart_resize` to a multiple of patch * merge pixels in
each direction (a stretch of the whole image: no crop, no pad), cuts it into patches and the vision
tower merges merge x merge neighbouring patches into one token. So image i becomes a row-major grid
of (h / merge) x (w / merge) tokens, with (t, h, w) its row of `image_grid_thw`, and the grid covers
the whole original image. The four architectures differ inside the vision tower (window attention,
deepstack features) and the language model (Qwen3.5 is hybrid: only its full-attention layers call
attention, which capture handles generically), not in this layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import CaptureError
from ..layout import ImageLayout, ImageTile, SequenceLayout
from .base import Adapter
from .grids import split_image_runs


class QwenVLAdapter(Adapter):
    """pixel_values are flattened patches [sum of t*h*w, channels * temporal * patch * patch]: the
    processor orders each image's rows (h/merge, w/merge, merge, merge), so image token k of an
    image owns the merge^2 consecutive rows from k * merge^2, and a row's columns run channel-major."""

    family = "qwen-vl"
    architectures = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration",
                     "Qwen3VLForConditionalGeneration", "Qwen3_5ForConditionalGeneration")
    pixel_blocks = True

    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        grids = inputs["image_grid_thw"].tolist()
        if len(grids) != len(images):
            raise CaptureError(f"the processor gave {len(grids)} image grids for {len(images)} image(s)")
        if any(t != 1 for t, _, _ in grids):
            raise CaptureError("an image has more than one temporal patch; only still images are supported")
        merge = self.model.config.vision_config.spatial_merge_size
        shapes = [(h // merge, w // merge) for _, h, w in grids]
        positions = self.image_token_positions(inputs)
        runs = split_image_runs(positions, [rows * cols for rows, cols in shapes])
        return [ImageLayout(image.width, image.height,
                            (ImageTile(rows, cols, (0.0, 0.0, float(image.width), float(image.height)), run),))
                for image, (rows, cols), run in zip(images, shapes, runs)]

    def token_pixel_blocks(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[tuple]:
        per_token = self.model.config.vision_config.spatial_merge_size ** 2
        blocks, start = [], 0
        for t, h, w in inputs["image_grid_thw"].tolist():
            blocks += [(slice(start + k * per_token, start + (k + 1) * per_token), slice(None))
                       for k in range(t * h * w // per_token)]
            start += t * h * w
        return blocks

    def black_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        black = self.black_per_channel()
        # Columns are (channel, temporal, patch, patch) flattened: each channel owns a contiguous run.
        return black.to(pixels).repeat_interleave(pixels.shape[-1] // len(black)).expand_as(pixels).clone()
