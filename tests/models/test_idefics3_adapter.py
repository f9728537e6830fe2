"""The Idefics3 / SmolVLM adapter against ground truth on tiny random models.

Layouts: every image token's pixels (gradient footprints through a token-local vision tower), where they come
from in the original image (a coordinate-encoded image) and which `<row_i_col_j>` / `<global-img>` marker the
processor wrote before each tile's tokens, for non-square images of several sizes, tiled or global view only,
several images per prompt. Then the question span, multi-image maps, the float64 reference, gradients to the
pixels and the rendered map.
"""

import pytest
from family_checks import QUESTION, coordinate_image, prepare
from tiles_checks import (
    check_boxes_on_coordinates,
    check_left_tokens_paint_left,
    check_matches_reference,
    check_token_patches,
)

import glimpse
from tiny_families_tiles import build
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

ANSWER = " a red circle on the left"
CELL = 8  # pixels per token side: 32 px tiles, patch 4, pixel shuffle 2 -> 4 x 4 tokens
FAMILIES = ["idefics3", "smolvlm"]
SIZES = [[(100, 60), (30, 90), (57, 57)], [(130, 41), (20, 75)]]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(family, seed=0, longest=96):
        if (family, seed, longest) not in cache:
            cache[family, seed, longest] = build(family, seed, longest=longest)
        return cache[family, seed, longest]
    return get


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sizes", SIZES)
def test_tiles_follow_the_processor_markers(models, family, sizes):
    """(Every token's pixels: test_adapter_contract.py.)"""
    adapter, inputs, layout = prepare(*models(family), [coordinate_image(*size) for size in sizes])
    check_markers(adapter, inputs, layout)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_within_one_tile_has_the_global_view_only(models, family):
    # Images resized to a longest edge of 32 px fit one 32 px tile.
    adapter, inputs, layout = prepare(*models(family, longest=32), [coordinate_image(30, 20), coordinate_image(24, 32)])
    assert [[tile.box for tile in image.tiles] for image in layout.images] == [[(0, 0, 30, 20)], [(0, 0, 24, 32)]]
    truth = check_token_patches(adapter, inputs, layout)
    assert check_boxes_on_coordinates(adapter.processor, inputs, layout, truth, CELL) == len(layout.image_positions)
    check_markers(adapter, inputs, layout)


def check_markers(adapter, inputs, layout) -> None:
    """The processor's own text names each tile: `<row_i_col_j>` where the box puts it, `<global-img>` last."""
    tok = adapter.tokenizer
    ids = inputs["input_ids"][0].tolist()
    for image in layout.images:
        tiles, whole = image.tiles[:-1], image.tiles[-1]
        assert whole.box == (0, 0, image.width, image.height)
        assert tok.convert_ids_to_tokens(ids[whole.positions[0] - 1]) == "<global-img>"
        for tile in tiles:
            x0, y0, x1, y1 = tile.box
            row, col = round(y0 / (y1 - y0)) + 1, round(x0 / (x1 - x0)) + 1
            assert tok.convert_ids_to_tokens(ids[tile.positions[0] - 1]) == f"<row_{row}_col_{col}>"
            assert tile.positions == tuple(range(tile.positions[0], tile.positions[0] + len(tile.positions)))


@pytest.mark.parametrize("family", FAMILIES)
def test_tile_count(models, family):
    _, _, layout = prepare(*models(family), [rand_image(100, 60), rand_image(30, 90)])
    assert [len(image.tiles) for image in layout.images] == [3 * 2 + 1, 1 * 3 + 1]  # tiles + global view


# A given answer, or (None) one the model generates.
REFERENCE_CASES = [("idefics3", 0, ANSWER), ("idefics3", 1, ANSWER), ("smolvlm", 2, ANSWER), ("idefics3", 3, None)]


@pytest.mark.parametrize("family,seed,answer", REFERENCE_CASES)
def test_matches_reference(models, family, seed, answer):
    images = [rand_image(100, 60, seed=seed), rand_image(30, 90, seed=seed + 1)][: 2 - seed % 2]
    check_matches_reference(*models(family, seed), images, answer)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_tokens_paint_the_left_of_the_map(models, family):
    model, processor = models(family)
    explanation = glimpse.explain(model, processor, rand_image(120, 50), QUESTION, answer=" a red")
    check_left_tokens_paint_left(explanation, tile=0)  # first column of the top-left tile
