"""An explanation in words and at a glance: where each map peaks, the answer tokens that weigh most,
and a filmstrip of every answer token's own map (tokens.png)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import displayed_map, overlay

if TYPE_CHECKING:
    from .explanation import Explanation

FILM_SIDE = 160  # longest side of each token's map in the filmstrip
FILM_COLUMNS = 8
GAP = 4  # white pixels between the maps


def peak(explanation: Explanation, image: int = 0, token: int | None = None) -> tuple[int, int]:
    """(x, y): where the map (holistic, or answer token `token`'s) is highest, in the original image's
    pixels, over the part the model saw."""
    values, seen = displayed_map(explanation, image, token)
    row, col = np.unravel_index(np.argmax(np.where(seen, values, -np.inf)), values.shape)
    layout = explanation.layouts[image]
    return (min(layout.width - 1, int((col + 0.5) * layout.width / values.shape[1])),
            min(layout.height - 1, int((row + 0.5) * layout.height / values.shape[0])))


def place(x: int, y: int, width: int, height: int) -> str:
    """A point's ninth of the picture in words: "top left", "centre", "bottom right", ..."""
    rows, cols = ("top", "middle", "bottom"), ("left", "centre", "right")
    vertical, horizontal = rows[min(2, 3 * y // height)], cols[min(2, 3 * x // width)]
    return "centre" if (vertical, horizontal) == ("middle", "centre") else f"{vertical} {horizontal}"


def weightiest(explanation: Explanation, k: int = 3) -> list[int]:
    """The `k` answer tokens with the largest weights in the whole-answer map, heaviest first."""
    return sorted(range(len(explanation.answer_tokens)), key=lambda t: (-float(explanation.token_weights[t]), t))[:k]


def summary(explanation: Explanation, k: int = 3) -> list[str]:
    """The lines `glimpse explain` prints: question, answer, the top prompt words, where the whole
    answer's map peaks, and the `k` weightiest answer tokens with where their own maps peak."""
    e = explanation
    layout = e.layouts[0]

    def where(token: int | None) -> str:
        x, y = peak(e, 0, token)
        return f"peaks at x={x}, y={y} ({place(x, y, layout.width, layout.height)})"

    words = sorted(zip(e.prompt_word_scores.tolist(), e.prompt_words), key=lambda pair: -pair[0])[:k]
    tokens = [f"{e.answer_tokens[t].strip()!r} weight {float(e.token_weights[t]):.2f}, its map {where(t)}"
              for t in weightiest(e, k)]
    return [f"question: {e.question}", f"answer:   {e.answer}" + ("" if e.answer_generated else "  (given)"),
            "top prompt words: " + ", ".join(f"{word} ({score:.3g})" for score, word in words),
            f"whole-answer map {where(None)}" + (" of image 0" if len(e.images) > 1 else ""),
            "weightiest answer tokens (tokens.png shows every token's map): " + "; ".join(tokens)]


def filmstrip(explanation: Explanation, image: int = 0, side: int = FILM_SIDE,
              columns: int = FILM_COLUMNS) -> Image.Image:
    """Every answer token's own map over `image`, in answer order, each labelled with its token and its
    weight in the whole-answer map: the token-level reasoning the holistic map sums up."""
    e = explanation
    font = ImageFont.load_default(size=max(11, side // 12))
    label = round(1.5 * font.size)
    count = len(e.answer_tokens)
    rows = -(-count // columns)
    step = side + GAP
    sheet = Image.new("RGB", (min(count, columns) * step - GAP, rows * (side + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for t in range(count):
        picture = overlay(e, image, t, side=side)
        picture.thumbnail((side, side))
        left, top = (t % columns) * step, (t // columns) * (side + label)
        sheet.paste(picture, (left + (side - picture.width) // 2, top + label + (side - picture.height) // 2))
        weight = f"{float(e.token_weights[t]):.2f}"
        room = side - 12 - draw.textlength(weight, font=font)
        name = _fitted(draw, f"{t}: {e.answer_tokens[t].strip() or repr(e.answer_tokens[t])}", font, room)
        draw.text((left + 4, top + label // 2), name, fill="black", font=font, anchor="lm")
        draw.text((left + side - 4, top + label // 2), weight, fill="#555", font=font, anchor="rm")
    return sheet


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont, width: float) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "\u2026"
    return text
