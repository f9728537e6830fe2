"""Publication figures of an Explanation: one plain matplotlib `Figure` (no pyplot state).

The image and the holistic map with a colour bar on top, the chosen answer tokens' own maps in a
filmstrip beneath, then the question's words shaded by their scores and the answer's tokens shaded
by their weights. Sizes are in inches, so the figure looks the same at any dpi and in PNG, PDF or SVG.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.text import Text

from .errors import GlimpseError
from .render import agg_figure, overlay, shade_rgb, text_colour, unit_scale

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from PIL import Image

    from .explanation import Explanation

WIDTH = 6.4  # inches: the least width, that of the top row
TOP_ROW, STRIP_ROW, TITLE = 2.7, 1.9, 0.3  # row heights with their titles, and the titles' share
COLOUR_BAR = 0.65  # inches beside the top row for the colour bar's ticks and label
MARGIN, LINE, GAP, FONT = 0.12, 0.26, 0.08, 9  # the text block: margin, line height, word gap (inches), points


def figure(explanation: Explanation, image: int, tokens: list[int], *, colormap: str, normalisation: str,
           percentile: float) -> Figure:
    """The figure of `image` with `tokens`' maps in the filmstrip (none: no filmstrip); the maps are
    normalised one by one (`maps.normalise`'s `normalisation` and `percentile`) and drawn in `colormap`."""
    if colormap not in colormaps:
        raise GlimpseError(f"unknown colormap {colormap!r}: use one of matplotlib's, e.g. 'inferno', 'viridis', 'magma'")
    e = explanation
    style = {"colormap": colormap, "normalisation": normalisation, "percentile": percentile}
    holistic = overlay(e, image, **style)  # first, so that a bad normalisation fails before any drawing
    strip = [(f"{_piece(e.answer_tokens[t])} (token {t})", overlay(e, image, t, **style)) for t in tokens]
    width = max(WIDTH, 1.7 * len(strip) + 2 * MARGIN)
    fig = agg_figure(figsize=(width, 1))
    text = _shaded_lines(fig, width, [("Question:", e.prompt_words, e.prompt_word_scores),
                                      ("Answer:", [_piece(t) for t in e.answer_tokens], e.token_weights)])
    below = text + (STRIP_ROW if strip else 0)  # inches under the top row
    fig.set_size_inches(width, below + TOP_ROW)
    top = _row(fig, below, TOP_ROW, [1, 1, 0.06], span=WIDTH - 2 * MARGIN - COLOUR_BAR, beside=COLOUR_BAR)
    _panel(top[0], "image", e.images[image])
    _panel(top[1], "whole answer", holistic)
    _colour_bar(fig, top[2], colormap, normalisation, percentile)
    if strip:
        for ax, (title, picture) in zip(_row(fig, text, STRIP_ROW, [1] * len(strip), span=width - 2 * MARGIN), strip):
            _panel(ax, title, picture)
    return fig


def normalisation_label(normalisation: str, percentile: float) -> str:
    """'min-max normalised' or, e.g., 'clipped at the 99th percentile'."""
    return "min-max normalised" if normalisation == "minmax" else f"clipped at the {_ordinal(percentile)} percentile"


def _ordinal(number: float) -> str:
    if not float(number).is_integer():
        return f"{number:g}th"
    n = int(number)
    return f"{n}{'th' if n % 100 in (11, 12, 13) else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _piece(token: str) -> str:
    """A token as shown: stripped, or quoted where it is only white space."""
    return token.strip() or repr(token)


def _row(fig: Figure, bottom: float, height: float, ratios: list[float], span: float, beside: float = 0) -> list[Axes]:
    """A row of axes `span` inches wide and `height` inches high (its titles included), `bottom`
    inches above the figure's foot, centred with `beside` inches kept free on its right."""
    width, total = fig.get_size_inches()
    left = (width - span - beside) / 2 / width
    grid = fig.add_gridspec(1, len(ratios), width_ratios=ratios, left=left, right=left + span / width,
                            bottom=bottom / total, top=(bottom + height - TITLE) / total, wspace=0.08)
    return [fig.add_subplot(cell) for cell in grid]


def _panel(ax: Axes, title: str, picture: Image.Image) -> None:
    ax.imshow(picture)
    ax.set_title(title, fontsize=FONT)
    ax.axis("off")


def _colour_bar(fig: Figure, ax: Axes, colormap: str, normalisation: str, percentile: float) -> None:
    """The [0, 1] scale every map is drawn on; an arrow on top where percentile clipping saturates."""
    scale = ScalarMappable(Normalize(0, 1), colormaps[colormap])
    bar = fig.colorbar(scale, cax=ax, extend="max" if normalisation == "percentile" else "neither")
    bar.set_label(normalisation_label(normalisation, percentile), fontsize=FONT - 1)
    bar.ax.tick_params(labelsize=FONT - 2)


def _shaded_lines(fig: Figure, width: float, rows: list[tuple[str, list[str], np.ndarray]]) -> float:
    """Each (label, pieces, scores) row as its label and then its pieces on backgrounds shaded by
    score, wrapped at `width` inches; returns the block's height in inches. The texts are placed in
    inches from the foot of the figure, so they stay in place when its height is set afterwards."""
    renderer = fig.canvas.get_renderer()  # measures each piece without drawing the figure
    lines: list[list[tuple[Text, float]]] = []
    for label, pieces, scores in rows:
        head = _text(fig, label, weight="bold")
        start = MARGIN + _width(head, renderer) + GAP
        lines.append([(head, MARGIN)])
        x = start
        for piece, score in zip(pieces, unit_scale(scores)):
            colour = shade_rgb(score)
            text = _text(fig, piece, color=text_colour(*colour), bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5})
            size = _width(text, renderer)
            if x > start and x + size > width - MARGIN:
                lines.append([])
                x = start
            lines[-1].append((text, x))
            x += size + GAP
    for i, line in enumerate(lines):
        for text, x in line:
            text.set_position((x, MARGIN + (len(lines) - 1 - i) * LINE))
    return 2 * MARGIN + len(lines) * LINE


def _text(fig: Figure, content: str, **style) -> Text:
    return fig.text(0, 0, content, fontsize=FONT, va="bottom", transform=fig.dpi_scale_trans, **style)


def _width(text: Text, renderer: RendererBase) -> float:
    return text.get_window_extent(renderer).width / text.figure.dpi
