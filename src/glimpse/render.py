"""Pictures and reports of an Explanation: PNG overlays and one standalone HTML file."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from . import maps

if TYPE_CHECKING:
    from .explanation import Explanation

COLORMAP = "jet"
ALPHA = 0.5
REPORT_SIDE = 360  # longest side of the pictures embedded in the HTML report
EXPLAINED = {"logit": "raw logits z_t", "log_prob": "log-probabilities log p(y_t)",
             "attention": "attention pattern (no output quantity is differentiated)"}


def overlay(explanation: Explanation, image: int = 0, token: int | None = None) -> Image.Image:
    """The normalised map blended over the original image; regions the model never saw are dimmed."""
    values = explanation.visual_map(image, token, resolution="image")
    seen = maps.coverage(explanation.layouts[image])
    heat = colormaps[COLORMAP](maps.normalise(values, seen))[..., :3]
    base = np.asarray(explanation.images[image].convert("RGB"), dtype=np.float32) / 255.0
    blended = np.where(seen[..., None], (1 - ALPHA) * base + ALPHA * heat, 0.35 * base)
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def agg_figure(**options) -> Figure:
    """A matplotlib figure on an Agg canvas of its own (no pyplot state), so layout can measure text."""
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def figure_picture(figure: Figure) -> Image.Image:
    """A figure made by `agg_figure`, drawn, as an RGB picture."""
    canvas = figure.canvas
    canvas.draw()
    return Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")


def data_uri(picture: Image.Image, fmt: str = "JPEG", side: int = REPORT_SIDE) -> str:
    """The picture (shrunk to at most `side` pixels a side) as a data: URI for a standalone HTML page."""
    picture = picture.copy()
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, quality=88)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _shade_rgb(score: float) -> tuple[float, float, float]:
    """Background colour for a score in [0, 1]: white to orange-red."""
    r, g, b, _ = colormaps["Oranges"](0.1 + 0.8 * float(np.clip(score, 0, 1)))
    return r, g, b


def _shade(score: float) -> str:
    r, g, b = _shade_rgb(score)
    return f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"


def _unit(values: np.ndarray) -> list[float]:
    high = float(np.max(values)) if len(values) else 0.0
    return [float(v) / high if high > 0 else 0.0 for v in values]


def token_columns(explanation: Explanation) -> dict[str, np.ndarray]:
    """The per-token values a report tabulates: the core ones, then the method's own [T] values."""
    e = explanation
    own = {name: value for name, value in e.details.items() if np.shape(value) == (len(e.answer_tokens),)}
    columns = {"p": e.probs, "weight": e.token_weights}
    if not any(np.array_equal(e.ranking, value) for value in own.values()):  # GLIMPSE ranks by its own gamma
        columns["rank score"] = e.ranking
    return {**columns, **own}


def cost_text(cost: dict) -> str:
    """' · 2.3 s, 410 MB peak working memory on cpu (blockwise attention)' (empty when the run was
    not measured)."""
    if "seconds" not in cost:
        return ""
    memory = cost.get("peak_memory_bytes")
    peak = f", {memory / 2**20:.0f} MB peak working memory" if memory is not None else ""
    path = f" ({cost['attention_path'].replace('_', '-')} attention)" if cost.get("attention_path") else ""
    return f" \u00b7 {cost['seconds']:.2f} s{peak} on {cost.get('device', '?')}{path}"


def report(explanation: Explanation, standalone: bool = True) -> str:
    """HTML report: answer tokens coloured by the method's ranking (click one for its own maps),
    prompt words coloured by score, one map per image, a table of the per-token values (the
    method's own section only where it has one) and the notes on fallbacks taken."""
    e = explanation
    n_images, n_tokens = len(e.images), len(e.answer_tokens)
    pictures = [[data_uri(overlay(e, i))] + [data_uri(overlay(e, i, t)) for t in range(n_tokens)]
                for i in range(n_images)]
    words = [_unit(e.prompt_word_scores)] + [_unit(e.token_prompt_word_scores(t)) for t in range(n_tokens)]
    rank = _unit(np.clip(e.ranking, 0, None))
    columns = token_columns(e)
    tokens_html = "".join(
        f'<span class="tok" data-t="{t}" style="background:{_shade(rank[t])}" '
        f'title="{html.escape(" ".join(f"{k}={float(v[t]):.4g}" for k, v in columns.items()))}">'
        f'{html.escape(tok)}</span>'
        for t, tok in enumerate(e.answer_tokens))
    words_html = " ".join(
        f'<span class="word" style="background:{_shade(words[0][w])}">{html.escape(word)}</span>'
        for w, word in enumerate(e.prompt_words))
    images_html = "".join(
        f'<figure><img class="map" data-i="{i}" src="{pictures[i][0]}" alt="map of image {i}">'
        f'<figcaption>image {i} ({e.images[i].width}x{e.images[i].height})</figcaption></figure>'
        for i in range(n_images))
    header = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    rows = "".join(
        f"<tr><td>{t}</td><td>{html.escape(tok)}</td>"
        + "".join(f"<td>{float(value[t]):.4g}</td>" for value in columns.values()) + "</tr>"
        for t, tok in enumerate(e.answer_tokens))
    legend = "".join(f"<li><code>{html.escape(name)}</code> {tuple(np.shape(e.details[name]))}: "
                     f"{html.escape(e.details_doc.get(name, ''))}</li>" for name in e.details)
    section = f'<div class="details"><b>{html.escape(e.method)} values</b><ul>{legend}</ul></div>' if legend else ""
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in e.notes)
    notes_html = f'<div class="notes"><b>Notes</b><ul>{notes}</ul></div>' if notes else ""
    label = " (approximation)" if e.approximate else ""
    params = html.escape(", ".join(f"{k}={v}" for k, v in e.params.items()))
    shades = [[_shade(s) for s in row] for row in words]
    meta = (f"model <code>{html.escape(e.model_id)}</code> &middot; explains the answer's "
            f"{html.escape(EXPLAINED[e.explained])} &middot; {params} &middot; glimpse {html.escape(e.version)}"
            f"{html.escape(cost_text(e.cost))}")
    body = f"""<div class="glimpse-report">
<h2>{html.escape(e.method)}{label} explanation</h2>
<p class="meta">{meta}</p>
{notes_html}
<p><b>Question:</b> <span class="words">{words_html}</span></p>
<p><b>Answer</b> (shaded by {html.escape(e.ranking_by)};
click a token for its own maps, <a href="#" class="all">whole answer</a>):<br>
<span class="answer">{tokens_html}</span></p>
<p class="showing">Showing: whole answer</p>
<div class="images">{images_html}</div>
<table><tr><th>#</th><th>token</th>{header}</tr>{rows}</table>
{section}
</div>
<script>
(function() {{
  const pictures = {json.dumps(pictures)};
  const shades = {json.dumps(shades)};
  const tokens = {json.dumps(e.answer_tokens)};
  const root = document.currentScript.previousElementSibling;
  function show(k) {{
    root.querySelectorAll('img.map').forEach(img => img.src = pictures[+img.dataset.i][k]);
    root.querySelectorAll('.word').forEach((w, j) => w.style.background = shades[k][j]);
    root.querySelectorAll('.tok').forEach(s => s.classList.toggle('on', +s.dataset.t === k - 1));
    const shown = k === 0 ? 'whole answer' : 'token ' + (k - 1) + ' ' + JSON.stringify(tokens[k - 1]);
    root.querySelector('.showing').textContent = 'Showing: ' + shown;
  }}
  root.querySelectorAll('.tok').forEach(s => s.addEventListener('click', () => show(+s.dataset.t + 1)));
  root.querySelector('a.all').addEventListener('click', ev => {{ ev.preventDefault(); show(0); }});
}})();
</script>"""
    style = """<style>
.glimpse-report{font-family:system-ui,sans-serif;max-width:980px}
.glimpse-report .tok{cursor:pointer;padding:1px 2px;border-radius:3px;white-space:pre}
.glimpse-report .tok.on{outline:2px solid #1565c0}
.glimpse-report .word{padding:1px 3px;border-radius:3px}
.glimpse-report .images{display:flex;flex-wrap:wrap;gap:12px}
.glimpse-report figure{margin:0}
.glimpse-report table{border-collapse:collapse;margin-top:12px;font-size:13px}
.glimpse-report td,.glimpse-report th{border:1px solid #ccc;padding:2px 6px;text-align:right}
.glimpse-report .meta{color:#555;font-size:13px}
.glimpse-report .notes{background:#fff4e5;border-left:4px solid #f57c00;padding:4px 10px;font-size:13px}
.glimpse-report .details{font-size:13px}
</style>"""
    if not standalone:
        return style + body
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>glimpse: {html.escape(e.question)}</title>"
            f"{style}</head><body>{body}</body></html>")


def figure(explanation: Explanation, image: int = 0, tokens: list[int] | None = None, top: int = 3) -> Figure:
    """A matplotlib figure for a paper: the image, the holistic map, and per-token maps (by default
    the method's `top` highest-ranked answer tokens), with the question's words shaded by their
    scores beneath. A plain `Figure`: pyplot's state and the user's backend are left alone."""
    e = explanation
    if tokens is None:
        tokens = e.top_tokens(top)
    panels = [("image", e.images[image]), ("whole answer", overlay(e, image))]
    panels += [(f"{e.answer_tokens[t].strip() or repr(e.answer_tokens[t])} (token {t})", overlay(e, image, t))
               for t in tokens]
    fig = agg_figure(figsize=(2.6 * len(panels), 3.1))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (title, picture) in zip(axes[0], panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    words = _unit(e.prompt_word_scores)
    renderer = fig.canvas.get_renderer()  # measures each word without redrawing the figure
    x = 0.01
    for word, score in zip(e.prompt_words, words):
        text = fig.text(x, 0.02, word, fontsize=9, bbox={"facecolor": _shade_rgb(score), "edgecolor": "none", "pad": 1.5})
        x += text.get_window_extent(renderer).width / fig.bbox.width + 0.008
    fig.suptitle(f"{e.question}  ->  {e.answer}", fontsize=10)
    fig.subplots_adjust(bottom=0.14, top=0.8, wspace=0.05)
    return fig
