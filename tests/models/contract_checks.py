"""The checks every family's adapter must pass (test_adapter_contract.py runs them for each FAMILIES entry).

A `Family` says how to build the tiny model and which image sizes to lay out; `truth` is the pixel ground
truth of its kind of pixel_values (never the adapter's own formula):
* `frame_truth`: image-shaped pixel_values. Each token's gradient footprint through a token-local vision tower
  is the block `token_patches` names, and the coordinate-encoded image decoded from that block's real pixels is
  centred on the token's cell of its tile box (tiles_checks.py).
* `flat_truth`: Qwen-VL's flattened patch rows: each token owns merge^2 rows of its own, exactly its
  `token_pixel_blocks`, and those rows decode to its cell's centre.
* `vision_key_truth` (mllama_checks.py): cross-attention keys instead of sequence positions.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from family_checks import QUESTION, assert_tokens_land_in_their_cells, coordinate_image, decode_centre, prepare
from footprint import pixel_gradients
from PIL import Image
from tiles_checks import check_boxes_on_coordinates, check_token_patches, pixel_dependent_positions

ANSWER = " a red circle"


def frame_truth(adapter, inputs, layout, images, family: Family) -> None:
    truth = check_token_patches(adapter, inputs, layout)
    tight = check_boxes_on_coordinates(adapter.processor, inputs, layout, truth, family.cell)
    assert tight >= family.tight * len(layout.image_positions)


def flat_truth(adapter, inputs, layout, images, family: Family) -> None:
    model = adapter.model
    grads = pixel_gradients(model, model.model.visual, model.model.language_model, inputs, layout.image_positions)
    blocks = adapter.token_pixel_blocks(inputs, layout)
    assert len(blocks) == len(grads)
    for grad, block in zip(grads, blocks):
        truth = torch.nonzero(grad.abs().sum(-1) > 0).flatten().tolist()
        assert list(range(grad.shape[0]))[block[0]] == truth
    assert_tokens_land_in_their_cells(_flat_centres(adapter, inputs, grads, images), layout)


def _flat_centres(adapter, inputs, grads, images):
    """Per image token: (image index, decoded original centre) of the pixel_values rows it depends on. Which rows
    belong to which image follows from image_grid_thw; every token owns merge^2 rows, disjoint from the others'."""
    ip = adapter.processor.image_processor
    ends = np.cumsum(inputs["image_grid_thw"].prod(-1).tolist())
    pixels, seen, found = inputs["pixel_values"], set(), []
    for grad in grads:
        rows = torch.nonzero(grad.abs().sum(-1) > 0).flatten().tolist()
        assert len(rows) == ip.merge_size ** 2 and not seen & set(rows)
        seen |= set(rows)
        image = int(np.searchsorted(ends, rows[0], side="right"))
        assert all(int(np.searchsorted(ends, r, side="right")) == image for r in rows)
        # [rows, C, T, P, P] -> channels first, first of the T identical temporal copies
        patches = pixels[rows].view(len(rows), 3, ip.temporal_patch_size, ip.patch_size, ip.patch_size)[:, :, 0]
        found.append((image, decode_centre(patches.transpose(0, 1), ip, images[image])))
    assert len(seen) == pixels.shape[0]
    return found


@dataclass(frozen=True)
class Family:
    """One shared-suite entry: `build()` -> (model, processor); `prompts`: the image sizes of each prompt laid out
    against the ground truth; `truth(adapter, inputs, layout, images, family)`; `cell`: pixels per token side of
    a processed frame; `tight`: the share of tokens whose decoded centre must sit on their cell (the others
    reach past the image or blend cells); `around`: the template text just before and after the question."""

    build: Callable[[], tuple]
    prompts: tuple[tuple[tuple[int, int], ...], ...] = (((100, 60), (30, 90)),)
    truth: Callable = frame_truth
    cell: int = 0
    tight: float = 1.0
    around: tuple[str | None, str | None] = (None, None)


def coordinate_images(sizes) -> list[Image.Image]:
    return [coordinate_image(*size) for size in sizes]


def check_question(model, processor, family: Family) -> None:
    """P is the user's question only: not the system prompt (which repeats it), not the template."""
    system = f"You are a careful assistant. {QUESTION} is not the question here."
    adapter, inputs, layout = prepare(model, processor, coordinate_images(family.prompts[0][:1]), system=system)
    ids, tok = inputs["input_ids"][0].tolist(), adapter.tokenizer
    assert layout.question_located and layout.prompt_words == tuple(QUESTION.rstrip("?").split())
    assert tok.decode([ids[p] for p in layout.prompt]).strip() == QUESTION
    assert list(layout.prompt) == list(range(layout.prompt[0], layout.prompt[-1] + 1))
    assert layout.prompt[0] > max(layout.image_sequence_positions)
    assert not {ids[p] for p in layout.prompt} & set(tok.all_special_ids)
    assert system in tok.decode(ids[: layout.prompt[0]])
    before, after = family.around
    if before is not None:
        assert tok.decode(ids[max(layout.image_sequence_positions) + 1: layout.prompt[0]]) == before
    if after is not None:
        assert tok.decode(ids[layout.prompt[-1] + 1: layout.answer[0]]) == after


def check_answer(adapter, inputs, layout) -> None:
    """Y is the last tokens, they decode to the answer, and each is predicted one position earlier."""
    assert adapter.tokenizer.decode(inputs["input_ids"][0, list(layout.answer)]).strip() == ANSWER.strip()
    assert layout.answer == tuple(range(layout.length - len(layout.answer), layout.length))
    assert layout.length == inputs["input_ids"].shape[1] and layout.queries == [p - 1 for p in layout.answer]


def check_image_tokens(adapter, inputs, layout, images) -> None:
    """One layout per image; sequence families: V is exactly the positions whose embedding depends on the pixels
    (found without the adapter), each once and holding the image token id; cross-attention families: the
    anchors hold it instead."""
    assert [(image.width, image.height) for image in layout.images] == [im.size for im in images]
    ids = inputs["input_ids"][0]
    image_id = adapter.model.config.image_token_id
    positions = layout.image_sequence_positions
    assert len(set(layout.image_positions)) == len(layout.image_positions)
    assert all(int(ids[p]) == image_id for p in positions)
    if not layout.cross_attention:
        assert sorted(layout.image_positions) == pixel_dependent_positions(adapter.model, inputs)


def check_capabilities(adapter, inputs, layout) -> None:
    """What the adapter declares is what it does."""
    import glimpse

    if adapter.pixel_blocks:
        blocks = adapter.token_pixel_blocks(inputs, layout)
        assert len(blocks) == len(layout.image_positions)
        assert len({repr(block) for block in blocks}) == len(blocks)
    else:
        try:
            adapter.token_pixel_blocks(inputs, layout)
        except glimpse.MethodError as error:
            assert "pixel blocks" in str(error)
        else:
            raise AssertionError("token_pixel_blocks worked on an adapter without pixel_blocks")
    pairs = adapter.bidirectional_pairs(inputs, layout)
    assert (pairs is not None) == adapter.prefix_lm
    if pairs is not None:
        assert pairs.shape == (layout.length, layout.length) and torch.triu(pairs, diagonal=1).any()
        assert not pairs[list(layout.answer)].triu(1).any()  # the answer stays causal
    assert bool(adapter.cross_attention_layers()) == adapter.cross_attention_images == layout.cross_attention


def check_black_pixels(adapter, images) -> None:
    """black_pixels is what the processor makes of a black image, wherever that is not padding (zeros)."""
    black = [Image.new("RGB", image.size) for image in images]
    pixels = adapter.encode(black, adapter.render_prompt(QUESTION, len(black)))["pixel_values"]
    real = pixels != 0
    assert real.any()
    torch.testing.assert_close(adapter.black_pixels(pixels)[real], pixels[real])
