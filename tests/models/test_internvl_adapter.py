"""The InternVL adapter on a tiny random InternVL: tiles + thumbnail, question span, maps, gradients."""

import numpy as np
import pytest

from family_checks import (assert_tokens_land_in_their_cells, check_explains_each_image, check_question_span,
                           coordinate_image, decode_centre, logit_pixel_gradient, prepare)
from footprint import footprints
from tiny_families_qwen import build

# (width, height) pairs, one two-image prompt each: 2x1 and 1x2 canvases, one tile (no thumbnail) for a
# small square image, the full 4 tiles (2x2) and 4x1 / 1x3 canvases; every multi-tile image adds a thumbnail.
SIZE_PAIRS = [((120, 60), (50, 90)), ((30, 30), (300, 250)), ((200, 40), (41, 130))]


@pytest.mark.parametrize("sizes", SIZE_PAIRS)
def test_image_tokens_land_where_the_layout_says(sizes):
    model, processor = build("internvl", seed=1)
    images = [coordinate_image(*size) for size in sizes]
    adapter, inputs, layout = prepare(model, processor, images)
    # Ground truth 1: each token's footprint is exactly the pixel_values block token_patches names.
    boxes = footprints(model, model.model.vision_tower, model.model.language_model, inputs, layout.image_positions)
    assert adapter.token_patches(inputs, layout) == boxes
    # Ground truth 2: decoded, that block comes from the token's cell of its tile box in the original image.
    # Which tiles belong to which image comes from the image processor's own count (thumbnail included).
    tiles = processor.image_processor(images=images)["num_patches"]
    assert [len(image.tiles) for image in layout.images] == list(tiles)
    owner = np.repeat(np.arange(len(images)), tiles)
    pixels = inputs["pixel_values"]
    found = [(int(owner[k]), decode_centre(pixels[k, :, y0:y1, x0:x1], processor.image_processor, images[owner[k]]))
             for k, y0, y1, x0, x1 in boxes]
    assert_tokens_land_in_their_cells(found, layout)


def test_question_span_in_chat_template():
    check_question_span(*build("internvl"), before_question="</img>\n")


def test_explains_each_image():
    check_explains_each_image(*build("internvl"))


def test_answer_logit_reaches_pixels():
    grad = logit_pixel_gradient(*build("internvl"))
    assert (grad.abs().sum(dim=(1, 2, 3)) > 0).all()  # every tile, the thumbnail included
