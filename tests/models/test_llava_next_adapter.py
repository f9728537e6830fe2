"""The LLaVA-NeXT and LLaVA-OneVision adapters against ground truth on tiny random models.

Layouts: every image token's pixels (gradient footprints through a token-local vision tower) and where they
come from in the original image (a coordinate-encoded image), for non-square images of several sizes, with and
without OneVision's downsampling, single- and multi-image. Then the question span, multi-image maps, the
float64 reference, gradients to the pixels and the rendered map.
"""

import pytest
from family_checks import QUESTION, coordinate_image, prepare
from tiles_checks import (
    check_boxes_on_coordinates,
    check_left_tokens_paint_left,
    check_matches_reference,
    check_token_patches,
    image_token_blocks,
)

import glimpse
from tiny_families_tiles import build
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

ANSWER = " a red circle on the left"
CELL = 7  # pixels per token side in a 28 px tile of 4 x 4 tokens
VARIANTS = {"next": ("llava_next", {}), "onevision": ("llava_onevision", {}),
            # anyres_max_1: every high-res grid beyond ~1 tile's worth of tokens is downsampled (bilinear).
            "onevision_downsampled": ("llava_onevision", {"aspect": "anyres_max_1"})}
# The last pair is padded onto its canvas and unpadded by the model, which drops mosaic columns holding pixels.
SIZES = [[(100, 60), (30, 90)], [(57, 57), (130, 41)], [(20, 75), (84, 28)], [(200, 120), (90, 160)]]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(variant, seed=0):
        if (variant, seed) not in cache:
            family, options = VARIANTS[variant]
            cache[variant, seed] = build(family, seed, **options)
        return cache[variant, seed]
    return get


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("sizes", SIZES)
def test_each_image_is_a_base_view_and_a_high_res_grid(models, variant, sizes):
    """(Every token's pixels: test_adapter_contract.py.)"""
    _, _, layout = prepare(*models(variant), [coordinate_image(*size) for size in sizes])
    assert all(len(image.tiles) == 2 for image in layout.images)


def test_downsampled_tokens_across_tile_seams(models):
    """A token blending cells of two tiles names the frame and block it draws on; its grid keeps the box."""
    adapter, inputs, layout = prepare(*models("onevision_downsampled"), [coordinate_image(100, 60)])
    truth = check_token_patches(adapter, inputs, layout)
    assert any(len(truth[pos]) > 1 for pos in layout.image_positions)
    _, _, undownsampled = prepare(*models("onevision"), [coordinate_image(100, 60)])
    hires, reference = layout.images[0].tiles[1], undownsampled.images[0].tiles[1]
    assert hires.rows * hires.cols < reference.rows * reference.cols and hires.box == reference.box


def test_onevision_multi_image_sample_has_base_views_only(models):
    """Images of one multi-image sample (nested list, batch_num_images = [2]) get no anyres tiles."""
    model, processor = models("onevision")
    images = [coordinate_image(100, 60), coordinate_image(50, 70)]
    adapter, _, _ = prepare(model, processor, images)
    text = adapter.render_prompt(QUESTION, 2)
    inputs = dict(processor(images=[images], text=text, return_tensors="pt"))
    layout = adapter.layout(inputs, images, text, QUESTION, 1)
    assert [len(image.tiles) for image in layout.images] == [1, 1]
    assert layout.images[0].tiles[0].box == (0.0, -20.0, 100.0, 80.0)  # padded to a square
    truth = check_token_patches(adapter, inputs, layout)
    assert check_boxes_on_coordinates(processor, inputs, layout, truth, CELL) >= len(layout.image_positions) // 2


def test_newline_tokens_are_not_image_tokens(models):
    adapter, inputs, layout = prepare(*models("next"), [rand_image(100, 60)])
    newlines = [pos for pos, blocks in image_token_blocks(adapter.model, inputs).items() if not blocks]
    hires = layout.images[0].tiles[1]
    assert not set(newlines) & set(layout.image_positions)
    # One newline closes each row of the high-res grid.
    assert [hires.positions[(r + 1) * hires.cols - 1] + 1 for r in range(hires.rows)] == newlines


# A given answer, or (None) one the model generates.
REFERENCE_CASES = [("next", 0, ANSWER), ("next", 1, ANSWER), ("onevision_downsampled", 0, ANSWER), ("next", 2, None)]


@pytest.mark.parametrize("variant,seed,answer", REFERENCE_CASES)
def test_matches_reference(models, variant, seed, answer):
    images = [rand_image(100, 60, seed=seed), rand_image(30, 90, seed=seed + 1)][: 2 - seed % 2]
    check_matches_reference(*models(variant, seed), images, answer)


@pytest.mark.parametrize("variant", ["next", "onevision_downsampled"])
def test_left_tokens_paint_the_left_of_the_map(models, variant):
    model, processor = models(variant)
    explanation = glimpse.explain(model, processor, rand_image(120, 50), QUESTION, answer=" a red")
    check_left_tokens_paint_left(explanation, tile=1)  # first column of the high-res grid


def test_unsupported_tile_geometry_is_reported():
    model, processor = build("llava_next")
    processor.image_processor.size = {"shortest_edge": 32}  # tiles resized after cutting, then centre-cropped
    with pytest.raises(glimpse.CaptureError, match="geometry"):
        prepare(model, processor, [rand_image(100, 60)])
