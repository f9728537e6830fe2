"""Inverting an image processor's resize / pad / centre-crop, shared by adapters.

Each function returns the box (x0, y0, x1, y1) in ORIGINAL image pixel coordinates that the
processed view covers, so a token grid over the view can be laid back onto the original image.
"""

from __future__ import annotations

import numpy as np
from transformers.image_processing_utils import get_patch_output_size
from transformers.image_transforms import get_resize_output_image_size
from transformers.image_utils import ChannelDimension
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

from ..errors import UnsupportedModelError
from ..layout import Box


def _get(size, key):
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def resized_shape(height: int, width: int, size) -> tuple[int, int]:
    """(height, width) after the processor's resize, with transformers' own rounding."""
    if _get(size, "shortest_edge") and not _get(size, "longest_edge"):
        dummy = np.zeros((1, height, width), dtype=np.uint8)
        return tuple(get_resize_output_image_size(dummy, size=_get(size, "shortest_edge"), default_to_square=False,
                                                  input_data_format=ChannelDimension.FIRST))
    if _get(size, "height") and _get(size, "width"):
        return _get(size, "height"), _get(size, "width")
    raise UnsupportedModelError(f"the image processor's resize size {size!r} is not one glimpse can invert "
                                "(shortest_edge, or height and width)")


def pad_resize_crop_box(width: int, height: int, *, pad_to_square: bool, size, crop) -> Box:
    """Box covered by: optional pad to a centred square, resize to `size`, optional centre crop."""
    # Canvas = the (possibly padded) image, expressed in original coordinates.
    cx0, cy0, cw, ch = 0.0, 0.0, float(width), float(height)
    if pad_to_square and width != height:
        side = max(width, height)
        if width > height:
            cy0 = -float((side - height) // 2)
        else:
            cx0 = -float((side - width) // 2)
        cw = ch = float(side)
    rh, rw = resized_shape(int(ch), int(cw), size) if size is not None else (int(ch), int(cw))
    sx, sy = cw / rw, ch / rh
    if crop is None:
        left, top, right, bottom = 0, 0, rw, rh
    else:
        crop_h, crop_w = _get(crop, "height"), _get(crop, "width")
        top, left = (rh - crop_h) // 2, (rw - crop_w) // 2  # floor, as transformers' centre crop
        right, bottom = left + crop_w, top + crop_h
    return (cx0 + left * sx, cy0 + top * sy, cx0 + right * sx, cy0 + bottom * sy)


def grid_boxes(width: int, height: int, rows: int, cols: int) -> list[Box]:
    """Row-major boxes of the rows x cols tiles a processor cuts from the whole image stretched
    onto its tile canvas (no crop, no pad): tile (r, c) covers that cell of the original image."""
    tw, th = width / cols, height / rows
    return [(c * tw, r * th, (c + 1) * tw, (r + 1) * th) for r in range(rows) for c in range(cols)]


def fit_pad_box(width: int, height: int, canvas: tuple[int, int], region: Box) -> Box:
    """Box in original coordinates of `region` (x0, y0, x1, y1 in canvas pixels) of a canvas
    (height, width) that holds the image resized to fit, aspect kept (transformers'
    `get_patch_output_size` rounding), and centred with zero padding (LLaVA-NeXT's anyres)."""
    dummy = np.zeros((1, height, width), dtype=np.uint8)
    fit_h, fit_w = get_patch_output_size(dummy, canvas, ChannelDimension.FIRST)
    top, left = (canvas[0] - fit_h) // 2, (canvas[1] - fit_w) // 2  # floor, as the processor pads
    sx, sy = width / fit_w, height / fit_h
    x0, y0, x1, y1 = region
    return ((x0 - left) * sx, (y0 - top) * sy, (x1 - left) * sx, (y1 - top) * sy)


def squash_box(width: int, height: int, *, size, crop) -> Box:
    """Box covered by LLaVA-NeXT's base view: the whole image resized to the base size (a square of
    `shortest_edge`, or height x width) regardless of its aspect, then an optional centre crop."""
    side = _get(size, "shortest_edge")
    target = {"height": _get(size, "height") or side, "width": _get(size, "width") or side}
    return pad_resize_crop_box(width, height, pad_to_square=False, size=target, crop=crop)


def tiles_and_thumbnail_boxes(width: int, height: int, image_processor, crop_to_patches: bool) -> list[Box]:
    """Boxes of the frames the GotOcr2 image processor makes of an image (InternVL, Aya Vision), in its
    order: the whole image stretched onto the cols x rows canvas of tiles closest to its aspect ratio
    and cut row-major, then a thumbnail of the whole image when there is more than one tile."""
    whole = (0.0, 0.0, float(width), float(height))
    ip = image_processor
    if not (crop_to_patches and ip.max_patches > 1):
        return [whole]
    n_cols, n_rows = get_optimal_tiled_canvas((height, width), (ip.size["height"], ip.size["width"]),
                                              ip.min_patches, ip.max_patches)
    boxes = grid_boxes(width, height, n_rows, n_cols)
    return boxes + [whole] if len(boxes) > 1 else boxes
