"""Ground truth for image-token geometry: each image token's gradient footprint on pixel_values.

With every attention module of the vision tower silenced (its output zeroed), the tower becomes
token-local, so the pixels an image token's embedding depends on are exactly its patch.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def token_local_vision(vision_tower: torch.nn.Module):
    def silence(module, args, output):
        if isinstance(output, tuple):
            return (torch.zeros_like(output[0]),) + tuple(output[1:])
        return torch.zeros_like(output)

    handles = [m.register_forward_hook(silence) for name, m in vision_tower.named_modules()
               if type(m).__name__.endswith("Attention")]
    assert handles, "no attention module found in the vision tower"
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def pixel_gradients(model, vision_tower, language_model, inputs, positions):
    """d embedding[pos].sum() / d pixel_values (shaped like pixel_values) per position, with the tower token-local."""
    captured = {}

    def grab(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"]

    pixels = inputs["pixel_values"].detach().clone().requires_grad_(True)
    handle = language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with token_local_vision(vision_tower):
            model(**dict(inputs, pixel_values=pixels))
    finally:
        handle.remove()
    return [torch.autograd.grad(captured["embeds"][0, pos].sum(), pixels, retain_graph=True)[0] for pos in positions]


def footprint_blocks(model, vision_tower, language_model, inputs, positions):
    """Per position, {frame index: (y0, y1, x0, x1)} where d embedding[pos] / d pixel_values != 0.

    A frame index is an int for 4-D pixel_values, a tuple (e.g. (image, tile)) for 5-D ones. Each
    block must be a full rectangle; a token that sees no pixel (a newline) gets {}.
    """
    grads = pixel_gradients(model, vision_tower, language_model, inputs, positions)
    result = []
    for pos, grad in zip(positions, grads):
        support = grad.abs().sum(dim=-3) > 0  # over channels: [*frames, H, W]
        blocks = {}
        for frame in torch.nonzero(support.flatten(-2).any(-1)).tolist():
            ys, xs = torch.nonzero(support[tuple(frame)], as_tuple=True)
            box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
            assert len(ys) == (box[1] - box[0]) * (box[3] - box[2]), f"token at {pos}: footprint is not a rectangle"
            blocks[frame[0] if len(frame) == 1 else tuple(frame)] = box
        result.append(blocks)
    return result


def footprints(model, vision_tower, language_model, inputs, positions):
    """(frame index, y0, y1, x0, x1) of d embedding[pos] / d pixel_values != 0, per position (one frame each)."""
    boxes = []
    for pos, blocks in zip(positions, footprint_blocks(model, vision_tower, language_model, inputs, positions)):
        assert len(blocks) == 1, f"token at {pos} sees several frames or none"
        ((index, box),) = blocks.items()
        boxes.append((index, *box))
    return boxes
