"""The InternVL adapter: tiles + thumbnail per image, as many as the image processor makes.
(Every token's pixels, the question, the answer and the maps: test_adapter_contract.py.)"""

import pytest
from family_checks import coordinate_image, prepare

from tiny_families_qwen import build

# (width, height) pairs, one two-image prompt each: 2x1 and 1x2 canvases, one tile (no thumbnail) for a
# small square image, the full 4 tiles (2x2) and 4x1 / 1x3 canvases; every multi-tile image adds a thumbnail.
SIZE_PAIRS = [((120, 60), (50, 90)), ((30, 30), (300, 250)), ((200, 40), (41, 130))]


@pytest.mark.parametrize("sizes", SIZE_PAIRS)
def test_tiles_per_image_are_the_image_processors(sizes):
    model, processor = build("internvl", seed=1)
    images = [coordinate_image(*size) for size in sizes]
    _, _, layout = prepare(model, processor, images)
    tiles = processor.image_processor(images=images)["num_patches"]
    assert [len(image.tiles) for image in layout.images] == list(tiles)
