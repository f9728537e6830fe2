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


def footprints(model, vision_tower, language_model, inputs, positions):
    """Bounding box (index, y0, y1, x0, x1) of d embedding[pos] / d pixel_values != 0, per position."""
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
    boxes = []
    for pos in positions:
        (grad,) = torch.autograd.grad(captured["embeds"][0, pos].sum(), pixels, retain_graph=True)
        support = grad.abs().sum(dim=-3) > 0  # over channels: [images, H, W]
        index, ys, xs = torch.nonzero(support, as_tuple=True)
        assert index.numel() and (index == index[0]).all(), f"token at {pos} sees several images or none"
        boxes.append((int(index[0]), int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1))
    return boxes
