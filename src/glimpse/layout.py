"""Where things sit in one teacher-forced input sequence, and how image tokens map to pixels.

These are plain data: adapters produce them, methods and the result object consume them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Box = tuple[float, float, float, float]

# What ImageTile.positions index. SEQUENCE: positions of image tokens in the language model's input
# sequence (every family whose image tokens are spliced into the text). VISION_KEYS: indices into the
# key axis of the language model's cross-attention layers (Mllama: the image never enters the
# sequence; the text attends to [images x tiles x (CLS + patches)] vision tokens in those layers).
SEQUENCE = "sequence"
VISION_KEYS = "vision_keys"
AXES = (SEQUENCE, VISION_KEYS)


@dataclass(frozen=True)
class ImageTile:
    """One row-major grid of image tokens.

    `box` is the rectangle (x0, y0, x1, y1), in ORIGINAL image pixel coordinates, that the grid
    covers. It may extend past the image (padding) or cover only part of it (a crop or a tile).
    `positions` are the indices of the grid's tokens, row-major, on the axis its image's
    `positions_axis` names: sequence positions (the usual case) or cross-attention key indices.
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
    def from_dict(cls, data: dict) -> ImageTile:
        return cls(data["rows"], data["cols"], tuple(data["box"]), tuple(data["positions"]))


@dataclass(frozen=True)
class ImageLayout:
    """All the tokens of one image: its tiles (one for LLaVA-1.5) and the original size.

    `positions_axis` (SEQUENCE or VISION_KEYS) says what the tiles' positions index. It is saved
    only when it is not SEQUENCE, so layouts of sequence-token families keep their saved form and
    files written before the field existed read back as SEQUENCE.
    """

    width: int
    height: int
    tiles: tuple[ImageTile, ...]
    positions_axis: str = SEQUENCE

    def __post_init__(self) -> None:
        if self.positions_axis not in AXES:
            raise ValueError(f"positions_axis must be one of {AXES}, got {self.positions_axis!r}")

    @property
    def positions(self) -> list[int]:
        return [p for tile in self.tiles for p in tile.positions]

    def within(self, side: int) -> ImageLayout:
        """The same layout on the image shrunk to at most `side` pixels a side (itself if it fits):
        what a picture of the map needs, at a fraction of a large photograph's memory."""
        factor = side / max(self.width, self.height)
        if factor >= 1:
            return self
        tiles = tuple(ImageTile(t.rows, t.cols, tuple(v * factor for v in t.box), t.positions) for t in self.tiles)
        return ImageLayout(max(1, round(self.width * factor)), max(1, round(self.height * factor)), tiles,
                           self.positions_axis)

    def to_dict(self) -> dict:
        data = {"width": self.width, "height": self.height, "tiles": [t.to_dict() for t in self.tiles]}
        if self.positions_axis != SEQUENCE:
            data["positions_axis"] = self.positions_axis
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ImageLayout:
        return cls(data["width"], data["height"], tuple(ImageTile.from_dict(t) for t in data["tiles"]),
                   data.get("positions_axis", SEQUENCE))


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
    # Sequence positions of the placeholder tokens that stand for VISION_KEYS images in the text
    # (Mllama's <|image|>): where such an image "is" in the sequence, e.g. for attention sinks.
    image_anchors: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if len({image.positions_axis for image in self.images}) > 1:
            raise ValueError("the images of one sequence mix sequence tokens and cross-attention keys")

    @property
    def image_positions(self) -> list[int]:
        """V: every image's token indices in image order, on the images' `positions_axis`."""
        return [p for image in self.images for p in image.positions]

    @property
    def cross_attention(self) -> bool:
        """True when V indexes cross-attention keys (VISION_KEYS) rather than sequence positions."""
        return bool(self.images) and self.images[0].positions_axis == VISION_KEYS

    @property
    def image_sequence_positions(self) -> list[int]:
        """The sequence positions that stand for the images: V itself, or the anchors when V are vision keys."""
        return list(self.image_anchors) if self.cross_attention else self.image_positions

    @property
    def queries(self) -> list[int]:
        """The query row of each answer token: its logit is produced one position earlier."""
        return [p - 1 for p in self.answer]
