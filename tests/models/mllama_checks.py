"""Pixel ground truth for a cross-attention family (Mllama): the image's tokens are the KEYS of the
cross-attention layers, so each key is read where the language model sees it (after the first
cross-attention layer's `k_norm`), through a token-local vision tower (footprint.py).
"""
from __future__ import annotations

import torch
from footprint import token_local_vision

from glimpse.layout import VISION_KEYS

# Decoded centres are those of a bilinear resize of a ramp: within 5 % of a cell (~0.4 px here).
CELL_TOLERANCE = 0.05


def vision_key_truth(adapter, inputs, layout, images, family) -> None:
    """Every mapped key sees exactly its claimed tile's patch (`token_patches`), decoded to its cell; every patch of
    every tile with image content belongs to exactly one mapped key; unmapped keys see no image pixels."""
    model, processor = adapter.model, adapter.processor
    assert layout.cross_attention and all(image.positions_axis == VISION_KEYS for image in layout.images)
    pixels = inputs["pixel_values"]
    grads = key_gradients(model, inputs)
    claimed = {k: (index, tile, cell) for index, image in enumerate(layout.images)
               for tile, grid in enumerate(image.tiles) for cell, k in enumerate(grid.positions)}
    seen = set()
    for k, grad in enumerate(grads):
        found = footprint(grad)
        if k not in claimed:
            # Not in the map: a tile's CLS (no pixels at all) or a key of a tile the processor left empty (zeros).
            assert found is None or not pixels[0][found[0]].any(), f"key {k} sees image pixels but is not mapped"
            continue
        assert found is not None, f"mapped key {k} sees no pixels"
        (image_index, tile), (y0, y1, x0, x1) = found
        index, claimed_tile, cell = claimed[k]
        assert (image_index, tile) == (index, claimed_tile), f"key {k} sees image {image_index} tile {tile}"
        assert (y1 - y0, x1 - x0) == (family.cell, family.cell) and not {(image_index, tile, y0, x0)} & seen
        seen.add((image_index, tile, y0, x0))
        check_cell(decode(pixels[0, image_index, tile, :, y0:y1, x0:x1], processor.image_processor, images[index]),
                   layout.images[index], claimed_tile, cell)
    content_tiles = [(i, t) for i in range(pixels.shape[1]) for t in range(pixels.shape[2]) if pixels[0, i, t].any()]
    per_tile = (pixels.shape[-1] // family.cell) ** 2
    assert sorted({(i, t) for i, t, _, _ in seen}) == content_tiles and len(seen) == per_tile * len(content_tiles)
    found = [footprint(grads[k]) for k in layout.image_positions]
    assert adapter.token_patches(inputs, layout) == [((0, *frame), *box) for frame, box in found]


def key_gradients(model, inputs) -> list[torch.Tensor]:
    """d key_k / d pixel_values for every cross-attention key k, with the vision tower token-local.

    The keys are read as the first cross-attention layer's attention gets them (the output of its k_norm:
    [1, kv_heads, K, head_dim]), so the key axis is the model's own, not a reshaping of ours."""
    found = {}
    layer = model.model.language_model.layers[model.config.text_config.cross_attention_layers[0]].cross_attn
    handle = layer.k_norm.register_forward_hook(lambda module, args, output: found.update(keys=output))
    pixels = inputs["pixel_values"].detach().clone().requires_grad_(True)
    try:
        with token_local_vision(model.model.vision_model):
            model(**dict(inputs, pixel_values=pixels))
    finally:
        handle.remove()
    keys = found["keys"][0]
    return [torch.autograd.grad(keys[:, k].sum(), pixels, retain_graph=True)[0] for k in range(keys.shape[1])]


def footprint(grad: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int, int, int]] | None:
    """((image, tile), (y0, y1, x0, x1)) of a key's non-zero gradient on pixel_values [1, images, tiles, 3, H, W]."""
    support = grad[0].abs().sum(2) > 0  # [images, tiles, H, W]
    if not support.any():
        return None
    frames = torch.nonzero(support.flatten(2).any(-1)).tolist()
    assert len(frames) == 1, f"a key sees several tiles: {frames}"
    (image, tile), = frames
    ys, xs = torch.nonzero(support[image, tile], as_tuple=True)
    box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
    assert len(ys) == (box[1] - box[0]) * (box[3] - box[2]), "footprint is not a rectangle"
    return (image, tile), box


def decode(block: torch.Tensor, image_processor, image) -> tuple[float, float, float] | None:
    """For processed pixels [3, h, w] of a `coordinate_image`: (fraction that is image content, mean original
    x, y of the content) or None without content. Content has the image's constant blue 128; the processor's
    padding is 0."""
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    levels = (block.double() * std + mean) * 255
    content = (levels[2] - 128).abs() < 0.5
    if not content.any():
        return None
    x = float(levels[0][content].mean()) * (image.width - 1) / 255 + 0.5
    y = float(levels[1][content].mean()) * (image.height - 1) / 255 + 0.5
    return float(content.double().mean()), x, y


def check_cell(decoded, image_layout, tile: int, cell: int) -> None:
    """The decoded content of a key's pixels is exactly the part of its claimed cell inside the original image."""
    grid = image_layout.tiles[tile]
    x0, y0, x1, y1 = grid.box
    cw, ch = (x1 - x0) / grid.cols, (y1 - y0) / grid.rows
    r, c = divmod(cell, grid.cols)
    left, top = x0 + c * cw, y0 + r * ch
    inside = (max(left, 0.0), max(top, 0.0), min(left + cw, image_layout.width), min(top + ch, image_layout.height))
    area = max(inside[2] - inside[0], 0.0) * max(inside[3] - inside[1], 0.0)
    if decoded is None:
        assert area < 1e-9, f"tile {tile} cell {cell} covers image pixels but its key sees only padding"
        return
    fraction, x, y = decoded
    assert abs(fraction - area / (cw * ch)) < 1e-6, (tile, cell, fraction, area / (cw * ch))
    cx, cy = (inside[0] + inside[2]) / 2, (inside[1] + inside[3]) / 2
    assert abs(x - cx) <= CELL_TOLERANCE * cw and abs(y - cy) <= CELL_TOLERANCE * ch, \
        f"tile {tile} cell {cell}: sees ({x:.2f}, {y:.2f}), claimed ({cx:.2f}, {cy:.2f}) of a {cw:.2f} x {ch:.2f} cell"
