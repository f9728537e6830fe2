"""Methods side by side on one answer: `compare` explains the same answer (generated once, or given)
with each method, and its `Comparison` draws them as one standalone HTML page and one PNG grid: a
column per method, the whole answer's maps on top, then a row per answer token.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch.runner import resolve_methods
from .batch.store import method_file
from .batch.work import error_text
from .errors import GlimpseError
from .folders import refuse_held
from .images import ImageInput, check_image
from .pipeline import explain, generate_answer
from .render import agg_figure, colour_gradient, data_uri, figure_picture, model_label, overlay

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

    from .explanation import Explanation

TOKENS = 12  # answer tokens shown by default: the rows of a long answer would bury the comparison
CELL_SIDE = 200  # px: the longest side of a map in the HTML page
CELL, LABEL, HEADER, DPI = 1.6, 1.3, 0.75, 100  # the PNG grid in inches: a map, the row labels, the titles


@dataclass(eq=False)
class Comparison:
    """Several methods' explanations of one answer to one question about the same images.

    `methods` are the columns in order (method names, or METHOD:KEY=VALUE variants); `explanations`
    holds those that ran, `errors` the one-line error of each that failed (at least one ran). Every
    explanation explains the text `answer`: the model's own, generated once (`answer_generated`), or
    the one given.
    """

    question: str
    answer: str
    answer_generated: bool
    methods: list[str]
    explanations: dict[str, Explanation]
    errors: dict[str, str]
    # Each map drawn once, at the cells' size, for the page and the grid alike.
    _drawn: dict[tuple[str, int, int | None], Image.Image] = field(default_factory=dict, init=False, repr=False)

    def picture(self, label: str, image: int, token: int | None) -> Image.Image:
        """Method `label`'s map of `image` (whole answer, or answer token `token`), as a cell shows it."""
        key = (label, image, token)
        if key not in self._drawn:
            self._drawn[key] = overlay(self.explanations[label], image, token, side=CELL_SIDE)
        return self._drawn[key]

    @property
    def answer_tokens(self) -> list[str]:
        return self._first.answer_tokens

    @property
    def _first(self) -> Explanation:
        return next(iter(self.explanations.values()))

    def shown_tokens(self, tokens: int | None = None) -> list[int]:
        """The answer tokens the pictures show a row each: the first `tokens` (default: TOKENS)."""
        count = TOKENS if tokens is None else tokens
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise GlimpseError(f"tokens is how many answer tokens to show, 0 or more; got {tokens!r}")
        return list(range(min(count, len(self.answer_tokens))))

    def to_html(self, path: str | Path | None = None, tokens: int | None = None) -> str:
        """One standalone HTML page (no external assets): a column per method, the whole answer's
        maps, then a row per shown token (`shown_tokens`); written to `path` if given."""
        html_text = _page(self, self.shown_tokens(tokens))
        if path is not None:
            Path(path).write_text(html_text, encoding="utf-8")
        return html_text

    def figure(self, tokens: int | None = None) -> Figure:
        """The grid as a plain matplotlib figure (no pyplot state): a column per method and image,
        the whole answer's maps, then a row per shown token; a failed method's column says why."""
        return _grid(self, self.shown_tokens(tokens))

    def to_png(self, path: str | Path | None = None, tokens: int | None = None) -> Image.Image:
        """The grid (`figure`) as a picture; written to `path` if given."""
        picture = figure_picture(self.figure(tokens))
        if path is not None:
            picture.save(path)
        return picture

    def save(self, folder: str | Path, tokens: int | None = None, overwrite: bool = False) -> Path:
        """compare.html, compare.png and each method's explanation in a folder of its own
        (`Explanation.save`; a variant's folder name made safe as batch runs make it). A folder that
        already holds files is an `OutputError` unless `overwrite`."""
        folder = Path(folder)
        refuse_held(folder, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        for label, explanation in self.explanations.items():
            explanation.save(folder / method_file(label), overwrite=overwrite)
        self.to_html(folder / "compare.html", tokens)
        self.to_png(folder / "compare.png", tokens)
        return folder


def compare(model: Any, processor: Any, images: ImageInput | Sequence[ImageInput], question: str,
            methods: Sequence[str], answer: str | None = None, options: dict[str, Any] | None = None, *,
            max_new_tokens: int = 32, max_answer_tokens: int | None = None,
            system_prompt: str | None = None) -> Comparison:
    """Explain one answer to `question` about `images` with each of `methods` (names, or variants
    METHOD:KEY=VALUE[:KEY=VALUE...]). Without `answer` the model generates one, once, and every
    method explains that text. `options` are method options as batch runs take them: "key" for
    every method that takes it, "method.key" for one. An unknown method or option is an error
    before any work; a method that fails on the input becomes a failed column; if every method
    fails, that is one error."""
    resolved = resolve_methods(methods, options or {})
    pictures = list(images) if isinstance(images, (list, tuple)) else [images]
    for picture in pictures:
        check_image(picture)
    generated = answer is None
    if answer is None:
        answer = generate_answer(model, processor, pictures, question, max_new_tokens=max_new_tokens,
                                 system_prompt=system_prompt)
    explanations, failures = {}, {}
    for label, name, params in resolved:
        try:
            explanation = explain(model, processor, pictures, question, answer, method=name,
                                  max_answer_tokens=max_answer_tokens, system_prompt=system_prompt, **params)
        except Exception as exc:  # one method failing on this input must not cost the others' columns
            failures[label] = exc
            continue
        explanation.answer_generated = generated  # given to the method, but the model's own answer all the same
        explanations[label] = explanation
    if not explanations:
        raise _all_failed(failures)
    return Comparison(question, answer, generated, [label for label, _, _ in resolved], explanations,
                      {label: error_text(exc) for label, exc in failures.items()})


def _all_failed(failures: dict[str, Exception]) -> GlimpseError:
    """The one error of a comparison where no method ran: the input's own error where every method
    met the same one (an empty answer, an image the model cannot take), else each method's."""
    first = next(iter(failures.values()))
    if isinstance(first, GlimpseError) and len({error_text(exc) for exc in failures.values()}) == 1:
        return first
    return GlimpseError("every method failed on this input: "
                        + "; ".join(f"{label}: {error_text(exc)}" for label, exc in failures.items()))


def _token_label(comparison: Comparison, token: int | None) -> str:
    if token is None:
        return "whole answer"
    text = comparison.answer_tokens[token]
    return f"{token}: {text.strip() or repr(text)}"


def _page(c: Comparison, shown: list[int]) -> str:
    first = c._first
    header = "".join(
        f'<th class="method failed">{html.escape(label)}<br><small>failed</small></th>' if label in c.errors else
        f'<th class="method" title="{html.escape(_params(c.explanations[label]))}">{html.escape(label)}</th>'
        for label in c.methods)
    rows = "".join(f'<tr class="{"whole" if token is None else "token"}"><th class="row" dir="auto">'
                   f'{html.escape(_token_label(c, token))}</th>'
                   + "".join(_cell(c, label, token) for label in c.methods) + "</tr>"
                   for token in [None, *shown])
    more = len(c.answer_tokens) - len(shown)
    rest = f" (the first {len(shown)} of its {len(c.answer_tokens)} tokens are shown)" if more else ""
    body = f"""<div class="glimpse-compare">
<h2>Methods compared on one answer</h2>
<p class="meta">model <code>{html.escape(model_label(first))}</code> &middot; glimpse {html.escape(first.version)}</p>
<p><b>Question:</b> <span dir="auto">{html.escape(c.question)}</span></p>
<p><b>Answer</b> ({"generated by the model" if c.answer_generated else "given"}, explained by every method){rest}:
<span dir="auto">{html.escape(first.answer)}</span></p>
<p class="meta">Each map is min-max normalised on its own, over the pixels the model saw (hatched: those it
never saw): <span class="bar"></span> from its minimum to its maximum.</p>
<table><tr><th></th>{header}</tr>{rows}</table>
</div>"""
    style = f"""<style>
.glimpse-compare{{font-family:system-ui,sans-serif;overflow-wrap:anywhere}}
.glimpse-compare table{{border-collapse:collapse}}
.glimpse-compare td,.glimpse-compare th{{border:1px solid #ddd;padding:4px;vertical-align:middle}}
.glimpse-compare th.row{{text-align:start;white-space:pre-wrap;max-width:160px}}
.glimpse-compare td img{{display:block;max-width:{CELL_SIDE}px;margin:2px auto}}
.glimpse-compare .failed{{background:#fdecea;color:#b71c1c;font-size:13px;max-width:{CELL_SIDE}px}}
.glimpse-compare .meta{{color:#555;font-size:13px}}
.glimpse-compare .bar{{display:inline-block;width:160px;height:10px;vertical-align:middle;
background:{colour_gradient()}}}
</style>"""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>glimpse compare: {html.escape(c.question)}"
            f"</title>{style}</head><body>{body}</body></html>")


def _params(explanation: Explanation) -> str:
    return ", ".join(f"{k}={v}" for k, v in explanation.params.items())


def _cell(c: Comparison, label: str, token: int | None) -> str:
    if label in c.errors:  # the error once, in the whole answer's row
        return f'<td class="failed" dir="auto">{html.escape(c.errors[label]) if token is None else ""}</td>'
    e = c.explanations[label]
    return "<td>" + "".join(f'<img src="{data_uri(c.picture(label, i, token), side=CELL_SIDE)}" '
                            f'alt="{html.escape(label)}: image {i}, {html.escape(_token_label(c, token))}">'
                            for i in range(len(e.images))) + "</td>"


def _grid(c: Comparison, shown: list[int]) -> Figure:
    n_images = len(c._first.images)
    columns = [(label, image) for label in c.methods for image in range(n_images)]
    rows = [None, *shown]
    width, height = LABEL + CELL * len(columns), HEADER + CELL * len(rows)
    fig = agg_figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    fig.subplots_adjust(left=LABEL / width, right=1 - 0.05 / width, bottom=0.05 / height, top=1 - HEADER / height,
                        wspace=0.04, hspace=0.04)
    fig.suptitle(textwrap.shorten(f"{c.question} -> {c._first.answer}", 30 + 12 * len(columns)), fontsize=9)
    for col, (label, image) in enumerate(columns):
        title = textwrap.fill(label, 22) + (f"\nimage {image}" if n_images > 1 else "")
        axes[0][col].set_title(title, fontsize=8)
        for row, token in enumerate(rows):
            _grid_cell(axes[row][col], c, label, image, token)
    for row, token in enumerate(rows):
        axes[row][0].set_ylabel(textwrap.fill(_token_label(c, token), 16), rotation=0, ha="right", va="center",
                                fontsize=8)
    return fig


def _grid_cell(ax: Axes, c: Comparison, label: str, image: int, token: int | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if label in c.explanations:
        ax.imshow(c.picture(label, image, token))
        return
    for spine in ax.spines.values():
        spine.set_visible(False)
    if token is None:  # the error once, in the whole answer's row
        error = textwrap.shorten(c.errors[label], 160)
        ax.text(0.5, 0.5, "failed:\n" + textwrap.fill(error, 26), ha="center", va="center", fontsize=6,
                color="#b71c1c", transform=ax.transAxes)
