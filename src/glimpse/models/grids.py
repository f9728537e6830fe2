"""Building blocks adapters share: image-token runs, token grids over pixel frames, attention blocks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import CaptureError
from ..layout import SequenceLayout

# Which [channels, H, W] frame of pixel_values: its index along the leading axes, an int for 4-D
# pixel_values ([frames, 3, H, W]), a tuple for 5-D ones (LLaVA-NeXT: (image, tile); Idefics3: (sample, frame)).
FrameIndex = int | tuple[int, ...]
# (frame index, y0, y1, x0, x1): the block pixel_values[index][:, y0:y1, x0:x1].
PixelPatch = tuple[FrameIndex, int, int, int, int]


def split_image_runs(positions: Sequence[int], counts: Sequence[int]) -> list[tuple[int, ...]]:
    """Split the image-token positions of several images into one contiguous run per image.

    `counts` is how many tokens each image should have, as the processor's geometry says; a total
    or a run that disagrees means processor and model configuration do not match.
    """
    if sum(counts) != len(positions):
        raise CaptureError(f"found {len(positions)} image tokens where the processor's geometry gives "
                           f"{' + '.join(map(str, counts))}; the processor and model configuration disagree")
    runs, start = [], 0
    for count in counts:
        run = tuple(positions[start:start + count])
        if run and run[-1] - run[0] != count - 1:
            raise CaptureError(f"the image tokens at {run[0]}..{run[-1]} are not one contiguous run of {count}")
        runs.append(run)
        start += count
    return runs


def grid_patches(index: FrameIndex, rows: int, cols: int, height: int, width: int) -> list[PixelPatch]:
    """Row-major pixel blocks of a rows x cols token grid laid evenly over one height x width frame."""
    ph, pw = height // rows, width // cols
    return [(index, r * ph, (r + 1) * ph, c * pw, (c + 1) * pw) for r in range(rows) for c in range(cols)]


def frame_per_tile_patches(pixel_values: torch.Tensor, layout: SequenceLayout, rows: int, cols: int) -> list[PixelPatch]:
    """Every image token's block when 4-D pixel_values hold one frame per tile, in layout order (images,
    then their tiles), each tile a rows x cols token grid laid evenly over its frame."""
    _, _, height, width = pixel_values.shape
    frames = sum(len(image.tiles) for image in layout.images)
    return [patch for k in range(frames) for patch in grid_patches(k, rows, cols, height, width)]


def block_index(patch: PixelPatch) -> tuple:
    """The index of a token's block in pixel_values: frame index (int or tuple), all channels, rows, columns."""
    frame, y0, y1, x0, x1 = patch
    return (*(frame if isinstance(frame, tuple) else (frame,)), slice(None), slice(y0, y1), slice(x0, x1))


def block_pairs(length: int, blocks: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boolean [length, length] that is True wherever query and key lie in the same block."""
    pairs = torch.zeros(length, length, dtype=torch.bool)
    for block in blocks:
        index = torch.tensor(list(block), dtype=torch.long)
        pairs[index[:, None], index[None, :]] = True
    return pairs
