"""Where things sit in one teacher-forced input sequence, and how image tokens map to pixels.

These are plain data: adapters produce them, methods and the result object consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageTile:
    """One row-major grid of image tokens.

    `box` is the rectangle (x0, y0, x1, y1), in ORIGINAL image pixel coordinates, that the grid
    covers. It may extend past the image (padding) or cover only part of it (a crop or a tile).
    `positions` are the sequence positions of the grid's tokens, row-major.
    """

    rows: int
    cols: int
    box: Box
    positions: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.positions) != self.rows * self.cols:
            raise ValueError(f"tile has {len(self.positions)} tokens for a {self.rows}x{self.cols} grid")

    def to_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "box": list(self.box), "positions": list(self.positions)}

    @classmethod
    def from_dict(cls, data: dict) -> "ImageTile":
        return cls(data["rows"], data["cols"], tuple(data["box"]), tuple(data["positions"]))


@dataclass(frozen=True)
class ImageLayout:
    """All the tokens of one image: its tiles (one for LLaVA-1.5) and the original size."""

    width: int
    height: int
    tiles: tuple[ImageTile, ...]

    @property
    def positions(self) -> list[int]:
        return [p for tile in self.tiles for p in tile.positions]

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "tiles": [t.to_dict() for t in self.tiles]}

    @classmethod
    def from_dict(cls, data: dict) -> "ImageLayout":
        return cls(data["width"], data["height"], tuple(ImageTile.from_dict(t) for t in data["tiles"]))


@dataclass(frozen=True)
class SequenceLayout:
    """Positions of the images (V), the user's question (P) and the answer (Y) in the sequence."""

    images: tuple[ImageLayout, ...]
    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    length: int
    prompt_words: tuple[str, ...] = field(default=())
    # For each prompt position, the index of the word it belongs to in `prompt_words`.
    word_of_token: tuple[int, ...] = field(default=())
    # False when the question could not be located and P fell back to all non-image prompt tokens.
    question_located: bool = True

    @property
    def image_positions(self) -> list[int]:
        return [p for image in self.images for p in image.positions]

    @property
    def queries(self) -> list[int]:
        """The query row of each answer token: its logit is produced one position earlier."""
        return [p - 1 for p in self.answer]
