"""Helpers shared by the adapter tests: prepared inputs, the coordinate-encoded image, end-to-end checks.

Ground truth for "which pixels of the ORIGINAL image does each image token see" comes from two
independent facts, never from the adapter's own formula:
* the gradient footprint (footprint.py): with the vision tower made token-local, the entries of
  `pixel_values` each image token's embedding depends on;
* a coordinate-encoded image: every pixel's red / green value encodes its own x / y, so the
  processed pixels of a footprint, decoded, say where in the original image they came from, through
  whatever resize, tiling and patch flattening the processor did.
The adapter's claim is the cell of its ImageTile grid (box in original coordinates); the decoded
centre of the token's footprint must be that cell's centre.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

import glimpse
from glimpse.models import adapter_for
from tiny_models import rand_image

QUESTION = "what color is the object?"
# Decoded centres land within 1 % of a cell on these models (bicubic resampling of a ramp is near exact).
CELL_TOLERANCE = 0.05


def prepare(model, processor, images, question=QUESTION, system=None, answer=" a red circle"):
    """(adapter, teacher-forced inputs, layout) for `images` and `question`, as `glimpse.explain` builds them."""
    adapter = adapter_for(model, processor)
    text = adapter.render_prompt(question, len(images), system)
    ids = adapter.answer_ids(text, answer)
    inputs = adapter.with_answer(adapter.encode(images, text), ids)
    return adapter, inputs, adapter.layout(inputs, images, text, question, len(ids))


def coordinate_image(width: int, height: int) -> Image.Image:
    """Red encodes x (0..255 across the width), green encodes y; blue is constant."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[..., 0] = np.round(np.arange(width) * 255 / (width - 1))[None, :]
    pixels[..., 1] = np.round(np.arange(height) * 255 / (height - 1))[:, None]
    return Image.fromarray(pixels)


def decode_centre(pixels: torch.Tensor, image_processor, image: Image.Image) -> tuple[float, float]:
    """Mean original (x, y) of processed `pixels` [3, ...] of a `coordinate_image`, in pixel-edge
    coordinates (original pixel x spans [x, x + 1])."""
    shape = (3,) + (1,) * (pixels.dim() - 1)
    mean = torch.tensor(image_processor.image_mean).view(shape)
    std = torch.tensor(image_processor.image_std).view(shape)
    levels = (pixels.double() * std + mean) * 255
    return (float(levels[0].mean()) * (image.width - 1) / 255 + 0.5,
            float(levels[1].mean()) * (image.height - 1) / 255 + 0.5)


def cell_claims(layout) -> list[tuple[int, float, float, float, float]]:
    """The adapter's claim per image token (layout order): (image, cell centre x, y, cell width, height)."""
    claims = []
    for index, image in enumerate(layout.images):
        for tile in image.tiles:
            x0, y0, x1, y1 = tile.box
            cw, ch = (x1 - x0) / tile.cols, (y1 - y0) / tile.rows
            claims += [(index, x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch, cw, ch)
                       for r in range(tile.rows) for c in range(tile.cols)]
    return claims


def assert_tokens_land_in_their_cells(found: list[tuple[int, tuple[float, float]]], layout) -> None:
    """`found`: per image token, (image index, decoded centre) from the ground truth."""
    claims = cell_claims(layout)
    assert len(found) == len(claims) == len(layout.image_positions)
    for k, ((image, (x, y)), (claimed, cx, cy, cw, ch)) in enumerate(zip(found, claims)):
        assert image == claimed, f"token {k} sees image {image}, the layout says {claimed}"
        assert abs(x - cx) <= CELL_TOLERANCE * cw and abs(y - cy) <= CELL_TOLERANCE * ch, \
            f"token {k} sees ({x:.2f}, {y:.2f}); its cell is centred at ({cx:.2f}, {cy:.2f}), {cw:.2f} x {ch:.2f}"


def check_explains_each_image(model, processor) -> None:
    """Holistic and per-token maps, one holistic map per image, from `glimpse.explain` alone."""
    pictures = [rand_image(120, 60, seed=1), rand_image(50, 90, seed=2)]
    result = glimpse.explain(model, processor, pictures, QUESTION, answer=" a red circle")
    assert len(result.layouts) == 2
    n_tokens = sum(len(layout.positions) for layout in result.layouts)
    assert result.token_visual.shape == (len(result.answer_token_ids), n_tokens)
    assert result.visual.shape == (n_tokens,) and np.isfinite(result.visual).all() and result.visual.max() > 0
    for index, picture in enumerate(pictures):
        assert result.visual_map(image=index).shape == (picture.height, picture.width)
        assert result.visual_map(image=index, token=0).shape == (picture.height, picture.width)
        assert result.image_scores(image=index).max() > 0
    assert (result.token_visual.max(axis=1) > 0).all() and result.prompt.max() > 0
    generated = glimpse.explain(model, processor, pictures, QUESTION, max_new_tokens=3)
    assert generated.answer_generated and generated.token_visual.shape[0] == len(generated.answer_token_ids)


def logit_pixel_gradient(model, processor) -> torch.Tensor:
    """d (logit of the first answer token) / d pixel_values, through the full (not silenced) model."""
    _, inputs, layout = prepare(model, processor, [rand_image(120, 60, seed=3)])
    pixels = inputs["pixel_values"].detach().clone().requires_grad_(True)
    logits = model(**dict(inputs, pixel_values=pixels)).logits
    answer = layout.answer[0]
    (grad,) = torch.autograd.grad(logits[0, answer - 1, inputs["input_ids"][0, answer]], pixels)
    return grad
