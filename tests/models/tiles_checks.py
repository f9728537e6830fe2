"""Ground-truth checks for the tiled families (LLaVA-NeXT / OneVision, Idefics3 / SmolVLM), on top of
family_checks.py (coordinate-encoded image, prepared inputs, multi-image explanation, logit gradient).

* Which pixels each image token sees: its gradient footprint through a token-local vision tower (footprint.py),
  in every frame of 5-D pixel_values; newline tokens see none.
* Where those pixels come from in the ORIGINAL image: the coordinate-encoded image decoded back from the real
  pixels of each footprint (blue stays 128 on real pixels, so the processor's padding shows).
* GLIMPSE itself: the float64 reference (reference.py) on inputs and positions rebuilt without the adapter.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from family_checks import QUESTION
from footprint import footprint_blocks
from transformers import ProcessorMixin

import glimpse
from glimpse.render import overlay
from reference import assert_match, named_like_reference, reference_glimpse
from tiny_families_tiles import language_model, vision_tower

# Decoded coordinates of a one-cell footprint must sit this close (original pixels) to its cell's centre.
# Measured: < 0.2 px (resampling); a tile misplaced by half a processed pixel is off by >= 0.5 px here.
CENTRE_TOLERANCE = 0.35


def image_token_blocks(model, inputs) -> dict[int, dict]:
    """Ground-truth footprint of every `<image>` token, newline tokens included."""
    ids = inputs["input_ids"][0]
    positions = torch.nonzero(ids == model.config.image_token_id).flatten().tolist()
    blocks = footprint_blocks(model, vision_tower(model), language_model(model), inputs, positions)
    return dict(zip(positions, blocks))


def check_token_patches(adapter, inputs, layout) -> dict[int, dict]:
    """The layout holds exactly the tokens that see pixels, and each token's patch is its true footprint
    (in the frame it names, for a token that blends several frames). Returns the footprints."""
    truth = image_token_blocks(adapter.model, inputs)
    assert sorted(layout.image_positions) == [pos for pos, blocks in truth.items() if blocks]
    patches = adapter.token_patches(inputs, layout)
    assert len(patches) == len(layout.image_positions)
    for pos, (index, *box) in zip(layout.image_positions, patches):
        assert truth[pos].get(index) == tuple(box), f"token at {pos}: {index, box} vs truth {truth[pos]}"
    return truth


def check_boxes_on_coordinates(processor, inputs, layout, truth, cell_px: int) -> int:
    """Every token's cell (its tile's box cut into rows x cols) against the original coordinates decoded from
    the real pixels of its true footprint: a footprint of one cell_px x cell_px block must be centred on a
    cell inside the image; a blended one (downsampling), or a cell reaching past the image, must at least
    span the centre of the cell's part inside the image. Returns how many tokens got the tight check."""
    ip = processor.image_processor
    mean, std = (torch.tensor(v, dtype=torch.float32)[:, None, None] for v in (ip.image_mean, ip.image_std))
    tight = 0
    for image in layout.images:
        size = (image.width, image.height)
        for tile in image.tiles:
            x0, y0, x1, y1 = tile.box
            cw, ch = (x1 - x0) / tile.cols, (y1 - y0) / tile.rows
            for k, pos in enumerate(tile.positions):
                r, c = divmod(k, tile.cols)
                cell = ((x0 + c * cw, x0 + (c + 1) * cw), (y0 + r * ch, y0 + (r + 1) * ch))
                blocks = truth[pos].items()
                levels = torch.cat([((inputs["pixel_values"][index][:, a:b, p:q] * std + mean) * 255).flatten(1)
                                    for index, (a, b, p, q) in blocks], dim=1)
                one_cell = [(b - a, q - p) for _, (a, b, p, q) in blocks] == [(cell_px, cell_px)]
                tight += _check_cell(levels, cell, size, one_cell)
    return tight


def _check_cell(levels: torch.Tensor, cell, size, one_cell: bool) -> int:
    # Real pixels keep blue at 128; padding (zeros, or the mean colour when padded before resizing) and
    # pixels blended with it do not.
    real = levels[:, (levels[2] - 128).abs() < 0.5]
    assert real.shape[1] or any(lo < 0 or hi > n for (lo, hi), n in zip(cell, size)), f"cell {cell} sees no pixel"
    if real.shape[1] == 0:
        return 0
    # A cell reaching past the image only gets the loose check: resampling blends the pixels by the edge.
    one_cell = one_cell and all(lo >= 0 and hi <= n for (lo, hi), n in zip(cell, size))
    for axis, ((lo, hi), n) in enumerate(zip(cell, size)):
        coords = real[axis] * (n - 1) / 255 + 0.5  # pixel centres, original coordinates (family_checks' encoding)
        centre = (max(lo, 0.0) + min(hi, float(n))) / 2
        if one_cell:
            assert abs(float(coords.mean()) - centre) <= CENTRE_TOLERANCE, f"cell {cell}: axis {axis} is off"
        else:
            assert float(coords.min()) - 0.5 <= centre <= float(coords.max()) + 0.5, f"cell {cell} misses its pixels"
    return int(one_cell)


def pixel_dependent_positions(model, inputs) -> list[int]:
    """Positions whose input embedding changes with pixel_values: the image tokens, found without any adapter."""
    seen = []
    hook = language_model(model).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].detach()), with_kwargs=True)
    try:
        with torch.no_grad():
            for shift in (0.0, 0.5):
                model(**dict(inputs, pixel_values=inputs["pixel_values"] + shift))
    finally:
        hook.remove()
    return torch.nonzero((seen[0][0] != seen[1][0]).any(-1)).flatten().tolist()


def check_matches_reference(model, processor, images, answer: str | None) -> None:
    """`glimpse.explain` on `images` (explaining `answer`, else a generated one) against the float64 reference."""
    explanation = glimpse.explain(model, processor, images, QUESTION, answer=answer, max_new_tokens=4)
    assert explanation.answer_generated == (answer is None)
    check_against_reference(model, processor, explanation)


def check_against_reference(model, processor, explanation, **options) -> None:
    """Maps and weights equal the float64 reference on inputs, V, P and Y rebuilt without the adapter."""
    messages = [{"role": "user", "content": [{"type": "image"} for _ in explanation.images]
                 + [{"type": "text", "text": explanation.question}]}]
    text = ProcessorMixin.apply_chat_template(processor, messages, add_generation_prompt=True, tokenize=False)
    encoded = dict(processor(images=explanation.images, text=text, return_tensors="pt"))
    prompt_ids = encoded["input_ids"][0].tolist()
    ids = torch.tensor([prompt_ids + explanation.answer_token_ids])
    inputs = dict(encoded, input_ids=ids, attention_mask=torch.ones_like(ids))
    question = processor.tokenizer.encode(explanation.question, add_special_tokens=False)
    start = max(i for i in range(len(prompt_ids)) if prompt_ids[i:i + len(question)] == question)
    V = pixel_dependent_positions(model, inputs)
    P = list(range(start, start + len(question)))
    ref = reference_glimpse(model, inputs, list(range(len(prompt_ids), ids.shape[1])), V, P, **options)
    for name in ("token_visual", "token_prompt", "visual", "prompt", "beta_visual", "beta_prompt", "gamma",
                 "probs", "alpha"):
        assert_match(named_like_reference(explanation)[name], ref[name], name)
    assert explanation.layers == ref["layers"].tolist()


def check_left_tokens_paint_left(explanation, tile: int) -> None:
    """Scores only on the first column of `tile` of image 0: the map and the PNG are hot on the left."""
    layout = explanation.layouts[0]
    start = sum(len(t.positions) for t in layout.tiles[:tile])
    chosen = layout.tiles[tile]
    scores = np.zeros_like(explanation.visual)
    scores[[start + r * chosen.cols for r in range(chosen.rows)]] = 1.0
    e = dataclasses.replace(explanation, visual=scores)
    heat = e.visual_map(resolution="image")
    third = layout.width // 3
    assert heat.shape == (layout.height, layout.width)
    assert np.unravel_index(heat.argmax(), heat.shape)[1] < third
    assert heat[:, :third].mean() > 0 and heat[:, -third:].max() == 0
    picture = np.asarray(overlay(e), dtype=np.float32)
    assert picture.shape == (layout.height, layout.width, 3)
    warmth = picture[..., 0] - picture[..., 2]  # inferno: yellow-orange where hot; cold shows the image
    assert warmth[heat > heat.max() / 2].mean() > warmth[:, -third:].mean() + 20
