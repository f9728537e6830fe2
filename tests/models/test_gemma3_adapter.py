"""The Gemma 3 adapter against ground truth on tiny random models, with and without pan-and-scan crops.

Layouts: every image token's pixels (gradient footprints through a token-local vision tower, SigLIP patches
average-pooled 2 x 2) and where they come from in the original image (a coordinate-encoded image), for
non-square images of several sizes, several per prompt; with pan-and-scan, every crop's tokens against the
crop's region of the original image, the crop count against the image processor's own. Then each image
block's bidirectional attention, the question span, multi-image maps, the float64 reference (image blocks
allowed, nothing else), gradients to every frame and caught future leaks.
"""

import pytest
from family_checks import QUESTION, coordinate_image, logit_pixel_gradient, prepare
from gemma_checks import (
    check_against_reference,
    check_leaks_are_caught,
    check_reference_refuses_without_allowance,
    reference_case,
    runs_allowed,
)

import glimpse
from tiny_families_gemma import build
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

CELL = 16  # pixels per token side: SigLIP 48 px, patch 8 -> 6 x 6 patches, pooled 2 x 2 -> 3 x 3 tokens
# Landscape (2 crops side by side), portrait (3 crops stacked), square and mildly elongated (< 1.2: no crops),
# very elongated (4 crops, the last one cut short at the image's edge).
SIZES = [[(100, 60), (30, 90)], [(57, 57), (130, 20)], [(50, 44), (41, 130), (101, 20)]]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(seed=0, pan_and_scan=False):
        if (seed, pan_and_scan) not in cache:
            cache[seed, pan_and_scan] = build("gemma3", seed, pan_and_scan=pan_and_scan)
        return cache[seed, pan_and_scan]
    return get


@pytest.mark.parametrize("pan_and_scan", [False, True])
@pytest.mark.parametrize("sizes", SIZES)
def test_one_tile_per_image_and_crop(models, sizes, pan_and_scan):
    """(Every token's pixels: test_adapter_contract.py.)"""
    model, processor = models(pan_and_scan=pan_and_scan)
    images = [coordinate_image(*size) for size in sizes]
    adapter, inputs, layout = prepare(model, processor, images)
    # Which frames belong to which image: the image processor's own crop count (the processor drops it).
    crops = processor.image_processor(images=images, **processor.images_kwargs)["num_crops"]
    assert [len(image.tiles) for image in layout.images] == [1 + n for n in crops]
    assert any(crops) == pan_and_scan
    whole = [image.tiles[0].box for image in layout.images]
    assert whole == [(0, 0, width, height) for width, height in sizes]


def test_each_block_is_bidirectional_within_itself(models):
    """One block per image and per crop, each `<start_of_image>` + 9 tokens + `<end_of_image>`; the allowed
    pairs are exactly each block with itself."""
    model, processor = models(pan_and_scan=True)
    adapter, inputs, layout = prepare(model, processor, [rand_image(100, 60), rand_image(50, 44)])
    ids, tok = inputs["input_ids"][0], processor.tokenizer
    tiles = [tile for image in layout.images for tile in image.tiles]
    assert len(tiles) == 3 + 1
    for tile in tiles:
        first, last = tile.positions[0], tile.positions[-1]
        assert tile.positions == tuple(range(first, last + 1))
        around = tok.convert_ids_to_tokens([int(ids[first - 1]), int(ids[last + 1])])
        assert around == ["<start_of_image>", "<end_of_image>"]
    assert "Here is the original image" in tok.decode(ids[: tiles[0].positions[0]])
    pairs = adapter.bidirectional_pairs(inputs, layout)
    assert (pairs == runs_allowed(layout.length, layout.image_positions)).all()
    assert int(pairs.sum()) == len(tiles) * 9 * 9


# (seed, pan-and-scan, answer or None to generate one, image sizes)
REFERENCE_CASES = [(0, False, " a red circle", [(100, 60)]),
                   (1, False, " the image shows a blue square", [(30, 90), (57, 57)]),
                   (2, True, " a red circle", [(100, 60), (30, 90)]), (3, False, None, [(64, 48)])]


@pytest.mark.parametrize("seed,pan_and_scan,answer,sizes", REFERENCE_CASES)
def test_matches_reference(models, seed, pan_and_scan, answer, sizes):
    model, processor = models(seed, pan_and_scan)
    images = [rand_image(*size, seed=seed + k) for k, size in enumerate(sizes)]
    explanation = glimpse.explain(model, processor, images, QUESTION, answer=answer, max_new_tokens=4)
    assert explanation.answer_generated == (answer is None)
    message = {"role": "user", "content": [{"type": "image"} for _ in images] + [{"type": "text", "text": QUESTION}]}
    text = processor.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
    inputs, Y, V, P = reference_case(model, processor, explanation, text, answer_type=0)
    check_against_reference(model, explanation, inputs, Y, V, P, runs_allowed(len(inputs["input_ids"][0]), V))
    if seed == 0:
        check_reference_refuses_without_allowance(model, inputs, Y, V, P)


@pytest.mark.parametrize("pan_and_scan", [False, True])
def test_answer_logit_reaches_every_frame(models, pan_and_scan):
    """d logit / d pixel_values != 0 on the image and each crop (the projector is no longer the zero matrix)."""
    grad = logit_pixel_gradient(*models(pan_and_scan=pan_and_scan))  # one 120 x 60 image: 2 crops with pan-and-scan
    assert len(grad) == (3 if pan_and_scan else 1) and (grad.abs().sum(dim=(1, 2, 3)) > 0).all()


def test_future_leaks_are_caught(models, monkeypatch):
    """Answer tokens marked as image tokens (token type 1) form a block of their own: bidirectional."""
    def answer_as_image(inputs, n_answer):
        types = inputs["token_type_ids"].clone()
        types[0, -n_answer:] = 1
        return dict(inputs, token_type_ids=types)
    check_leaks_are_caught(*models(), answer_as_image, monkeypatch)
