"""Pictures and reports of an Explanation: PNG overlays and one standalone HTML file."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from . import maps

if TYPE_CHECKING:
    from .explanation import Explanation

# Perceptually uniform and sequential: brightness grows with the value, in colour and in grey alike.
COLORMAP = "inferno"
ALPHA = 0.7  # opacity of the colour where the map is high; it fades with the value (see `blend`)
FULL_FROM = 0.5  # the normalised value from which the colour has its full opacity
DISPLAY_SIDE = 2048  # longest side of a rendered map (PNG, report, figure): a screen's, whatever the photo's
REPORT_SIDE = 360  # longest side of the pictures embedded in HTML pages (by default)
IMAGE_SIDE = 512  # longest side at which the report shows an image: readable, and the file stays a few MB
LEGEND_WIDTH = 480  # the least width of a PNG with its colour bar: smaller maps are enlarged to it
UNSEEN = 0.35  # brightness left to the pixels the model never saw (under grey hatching)
EXPLAINED = {"logit": "raw logits z_t", "log_prob": "log-probabilities log p(y_t)",
             "attention": "attention pattern (no output quantity is differentiated)"}


def overlay(explanation: Explanation, image: int = 0, token: int | None = None, alpha: float = ALPHA,
            colormap: str = COLORMAP, side: int = DISPLAY_SIDE, **normalisation) -> Image.Image:
    """The map, normalised (`normalisation`: the options of `maps.normalise`), blended over the original
    image in `colormap` (`blend`), at most `side` pixels a side; regions the model never saw are darkened and hatched."""
    values, seen = displayed_map(explanation, image, token, side)
    return blend(explanation.images[image], values, seen, alpha, colormap, **normalisation)


def blend(picture: Image.Image, values: np.ndarray, seen: np.ndarray, alpha: float = ALPHA,
          colormap: str = COLORMAP, **normalisation) -> Image.Image:
    """`values` coloured over `picture` with an opacity growing with the normalised value, `alpha` from
    `FULL_FROM` up: where the model looked, the colour; elsewhere the image's own colours, which stay
    readable (a colour question's objects keep theirs). Unseen pixels are darkened and hatched."""
    level = maps.normalise(values, seen, **normalisation)
    heat = colormaps[colormap](level)[..., :3]
    picture = picture.convert("RGB")
    if picture.size != (seen.shape[1], seen.shape[0]):
        picture = picture.resize((seen.shape[1], seen.shape[0]), Image.BILINEAR)
    base = np.asarray(picture, dtype=np.float32) / 255.0
    opacity = alpha * np.minimum(1.0, level / FULL_FROM)[..., None]
    rows, cols = np.indices(seen.shape)
    hatched = np.where(((rows + cols) % 16 < 2)[..., None], 0.6, UNSEEN * base)  # visible on dark images too
    blended = np.where(seen[..., None], (1 - opacity) * base + opacity * heat, hatched)
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def with_colour_bar(explanation: Explanation, image: int = 0, token: int | None = None) -> Image.Image:
    """The overlay (`overlay`) with a colour bar beneath: the map's raw values at its two ends, and a
    note where the processor cropped part of the image away (drawn hatched)."""
    values, seen = displayed_map(explanation, image, token)
    picture = blend(explanation.images[image], values, seen)
    if picture.width < LEGEND_WIDTH:
        picture = picture.resize((LEGEND_WIDTH, round(picture.height * LEGEND_WIDTH / picture.width)), Image.BILINEAR)
    notes = [] if seen.all() else ["hatched: not seen by the model (its processor cropped it away)"]
    return _legend(picture, value_range(values, seen), notes)


def _legend(picture: Image.Image, ends: tuple[float, float], notes: list[str]) -> Image.Image:
    width = picture.width
    size = max(12, round(width / 40))  # text in proportion to the picture
    font = ImageFont.load_default(size=size)
    margin, bar = size, size
    height = picture.height + margin + bar + (len(notes) + 1) * round(1.4 * size) + margin // 2
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(picture, (0, 0))
    top = picture.height + margin
    ramp = colormaps[COLORMAP](np.linspace(0, 1, width - 2 * margin))[:, :3]
    canvas.paste(Image.fromarray(np.round(np.repeat(ramp[None], bar, 0) * 255).astype(np.uint8)), (margin, top))
    draw = ImageDraw.Draw(canvas)
    line = top + bar + size // 3
    draw.text((margin, line), f"{ends[0]:.3g}", fill="black", font=font)
    draw.text((width - margin, line), f"{ends[1]:.3g}", fill="black", font=font, anchor="ra")
    draw.text((width / 2, line), "relevance: the map's minimum to its maximum", fill="black", font=font, anchor="ma")
    for i, note in enumerate(notes, 1):
        draw.text((margin, line + i * round(1.4 * size)), note, fill="#444", font=font)
    return canvas


def displayed_map(explanation: Explanation, image: int = 0, token: int | None = None,
                  side: int = DISPLAY_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The raw map and the pixels the model saw, at the image's size shrunk to at most `side` a side:
    the map itself has only the token grid's detail, and a picture needs no more than a screen's."""
    layout = explanation.layouts[image].within(side)
    return maps.to_image(layout, explanation.image_scores(image, token)), maps.coverage(layout)


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


def shade_rgb(score: float) -> tuple[float, float, float]:
    """Background colour for a score in [0, 1]: white to orange-red."""
    r, g, b, _ = colormaps["Oranges"](0.1 + 0.8 * float(np.clip(score, 0, 1)))
    return r, g, b


def shade(score: float) -> str:
    """Inline CSS for a score's shade: the background, and white text where it is dark."""
    r, g, b = shade_rgb(score)
    return f"background:{css_rgb(r, g, b)};color:{text_colour(r, g, b)}"


def text_colour(r: float, g: float, b: float) -> str:
    """Black on a light background, white on a dark one (by relative luminance)."""
    return "#fff" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 else "#000"


def css_rgb(r: float, g: float, b: float) -> str:
    return f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"


def unit_scale(values: np.ndarray) -> list[float]:
    high = float(np.max(values)) if len(values) else 0.0
    return [float(v) / high if high > 0 else 0.0 for v in values]


SHIPPED_NAME = "glimpse-toy"  # the shipped model's name in saved files; glimpse.load takes it too


def model_name(model_id: str) -> str:
    """The model as an explanation records it: a hub id as it is, a local folder by its name alone
    (its path is the making machine's: meaningless elsewhere, and possibly private), the shipped
    model as `SHIPPED_NAME`."""
    parts = [part for part in re.split(r"[\\/]", model_id) if part not in ("", ".")]
    if parts[-3:] == ["glimpse", "toy", "model"]:
        return SHIPPED_NAME
    local = model_id.startswith(("/", "\\", "~", ".")) or re.match(r"[A-Za-z]:", model_id) or len(parts) > 2
    return parts[-1] if local and parts else model_id


def model_label(explanation: Explanation) -> str:
    """The model as a report names it: its recorded name, and the hub commit it was loaded at (short)."""
    revision = explanation.model_revision
    return model_name(explanation.model_id) + (f" @ {revision[:12]}" if revision else "")


def map_range(explanation: Explanation, image: int = 0, token: int | None = None) -> tuple[float, float]:
    """The raw values at the colormap's two ends in `overlay` (min-max normalisation): the map's
    lowest and highest value over the pixels the model saw."""
    return value_range(*displayed_map(explanation, image, token))


def value_range(values: np.ndarray, seen: np.ndarray) -> tuple[float, float]:
    values = values[seen]
    return (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)


def colour_gradient(colormap: str = COLORMAP, stops: int = 17) -> str:
    """The colormap as a CSS gradient, low on the left: a colour bar without a picture to embed."""
    colours = [f"rgb({r * 255:.0f},{g * 255:.0f},{b * 255:.0f}) {100 * x:.0f}%"
               for x in np.linspace(0, 1, stops) for r, g, b, _ in [colormaps[colormap](x)]]
    return f"linear-gradient(to right,{','.join(colours)})"


def _script_json(value: object) -> str:
    """JSON that cannot end the <script> element it is written into ("</script>" in an answer token)."""
    return json.dumps(value).replace("<", "\\u003c")


def token_columns(explanation: Explanation) -> dict[str, np.ndarray]:
    """The per-token values a report tabulates: the core ones, then the method's own [T] values."""
    e = explanation
    own = {name: value for name, value in e.details.items() if np.shape(value) == (len(e.answer_tokens),)}
    columns = {"p": e.probs}
    if np.ptp(e.token_weights) > 0:  # equal weights (a method's mean or sum over tokens) say nothing per token
        columns["weight"] = e.token_weights
    if not any(np.array_equal(e.ranking, value) for value in own.values()):  # GLIMPSE ranks by its own gamma
        columns["rank score"] = e.ranking
    return {**columns, **own}


# What the report's table columns hold (a method's own columns are described by the method).
COLUMNS = {"#": "the token's place in the answer", "token": "its text",
           "p": "the model's probability of the token, given the image, prompt and answer before it",
           "weight": "its weight in the whole-answer map (the maps of all tokens, summed with these weights)",
           "rank score": "the score the answer tokens are shaded and ranked by"}


def cost_text(cost: dict) -> str:
    """' · 2.3 s, 410 MB peak working memory on cpu (blockwise attention)' (empty when the run was
    not measured)."""
    if "seconds" not in cost:
        return ""
    memory = cost.get("peak_memory_bytes")
    peak = f", {memory / 2**20:.0f} MB peak working memory" if memory is not None else ""
    path = f" ({cost['attention_path'].replace('_', '-')} attention)" if cost.get("attention_path") else ""
    return f" \u00b7 {cost['seconds']:.2f} s{peak} on {cost.get('device', '?')}{path}"


def _image_figure(explanation: Explanation, image: int, layer: str, low: str, high: str) -> str:
    """One image with its map layer stacked over it (the page's slider sets the layer's opacity),
    the colour bar labelled with the map's range, and a caption."""
    picture = explanation.images[image]
    width = round(picture.width * IMAGE_SIDE / max(picture.size))  # small images enlarged, large ones shrunk
    return (f'<figure class="map" data-i="{image}"><div class="stack" style="width:{width}px">'
            f'<img src="{data_uri(picture, side=IMAGE_SIDE)}" alt="image {image}">'
            f'<img class="heat" src="{layer}" alt="map over image {image}"></div>'
            f'<div class="colourbar"><span class="low" title="the map\'s minimum">{low}</span><span class="bar">'
            f'</span><span class="high" title="the map\'s maximum">{high}</span></div>'
            f'<figcaption>image {image} ({picture.width}x{picture.height})</figcaption></figure>')


def report(explanation: Explanation, standalone: bool = True) -> str:
    """HTML report: answer tokens coloured by the method's ranking (click one for its own maps),
    prompt words coloured by score, each image under its map (an opacity slider; a colour bar with
    the map's raw range), a table of the per-token values (the method's own columns and section only
    where it has them) and the notes on fallbacks taken. Every text is escaped and marked dir="auto",
    so right-to-left questions and answers read in their own direction."""
    e = explanation
    n_images, n_tokens = len(e.images), len(e.answer_tokens)
    shown = [None, *range(n_tokens)]  # what the page can show: the whole answer, then each token
    # The map layers are drawn fully opaque: the browser blends them over the image at the slider's opacity.
    drawn = [[displayed_map(e, i, t, IMAGE_SIDE) for t in shown] for i in range(n_images)]
    layers = [[data_uri(blend(e.images[i], *map_seen, alpha=1.0), side=IMAGE_SIDE) for map_seen in row]
              for i, row in enumerate(drawn)]
    ranges = [[[f"{value:.3g}" for value in value_range(*map_seen)] for map_seen in row] for row in drawn]
    words = [unit_scale(e.prompt_word_scores)] + [unit_scale(e.token_prompt_word_scores(t)) for t in range(n_tokens)]
    rank = unit_scale(np.clip(e.ranking, 0, None))
    columns = token_columns(e)
    tokens_html = "".join(
        f'<span class="tok" data-t="{t}" style="{shade(rank[t])}" '
        f'title="{html.escape(" ".join(f"{k}={float(v[t]):.4g}" for k, v in columns.items()))}">'
        f'{html.escape(tok)}</span>'
        for t, tok in enumerate(e.answer_tokens))
    words_html = " ".join(
        f'<span class="word" style="{shade(words[0][w])}">{html.escape(word)}</span>'
        for w, word in enumerate(e.prompt_words))
    images_html = "".join(_image_figure(e, i, layers[i][0], *ranges[i][0]) for i in range(n_images))
    header = "".join(f'<th title="{html.escape(COLUMNS.get(name, e.details_doc.get(name, "")))}">{html.escape(name)}</th>'
                     for name in ["#", "token", *columns])
    explained = "; ".join(f"<b>{html.escape(name)}</b>: {html.escape(COLUMNS.get(name, e.details_doc.get(name, '')))}"
                          for name in ["#", "token", *columns])
    rows = "".join(
        f'<tr><td>{t}</td><td class="text" dir="auto">{html.escape(tok)}</td>'
        + "".join(f"<td>{float(value[t]):.4g}</td>" for value in columns.values()) + "</tr>"
        for t, tok in enumerate(e.answer_tokens))
    legend = "".join(f"<li><code>{html.escape(name)}</code> {tuple(np.shape(e.details[name]))}: "
                     f"{html.escape(e.details_doc.get(name, ''))}</li>" for name in e.details)
    section = f'<div class="details"><b>{html.escape(e.method)} values</b><ul>{legend}</ul></div>' if legend else ""
    notes = "".join(f'<li dir="auto">{html.escape(n)}</li>' for n in e.notes)
    notes_html = f'<div class="notes"><b>Notes</b><ul>{notes}</ul></div>' if notes else ""
    label = " (approximation)" if e.approximate else ""
    params = html.escape(", ".join(f"{k}={json.dumps(v)}" for k, v in e.params.items()))  # as --set takes them
    shades = [[shade(s) for s in row] for row in words]
    meta = (f"model <code>{html.escape(model_label(e))}</code> &middot; explains the answer's "
            f"{html.escape(EXPLAINED[e.explained])} &middot; {params} &middot; glimpse {html.escape(e.version)}"
            f"{html.escape(cost_text(e.cost))}")
    body = f"""<div class="glimpse-report">
<h2>{html.escape(e.method)}{label} explanation</h2>
<p class="meta">{meta}</p>
{notes_html}
<p><b>Question:</b> <span class="words" dir="auto">{words_html}</span></p>
<p><b>Answer</b> (shaded by {html.escape(e.ranking_by)};
click a token for its own maps, <a href="#" class="all">whole answer</a>):<br>
<span class="answer" dir="auto">{tokens_html}</span></p>
<p class="meta">Shades: <span class="swatch"></span> from the lowest to the highest score in each line (the answer
tokens by {html.escape(e.ranking_by)}; the question words by their relevance to the map shown).</p>
<p class="showing" dir="auto">Showing: whole answer</p>
<p class="controls"><label>Map opacity <input type="range" class="opacity" min="0" max="1" step="0.05"
value="{ALPHA}"></label> &middot; colour bar: each map from its minimum to its maximum over the pixels the model
saw (hatched: pixels it never saw, cropped away by its processor)</p>
<div class="images">{images_html}</div>
<div class="table"><table><tr>{header}</tr>{rows}</table></div>
<p class="meta">{explained}.</p>
{section}
</div>
<script>
(function() {{
  const pictures = {_script_json(layers)};
  const ranges = {_script_json(ranges)};
  const shades = {_script_json(shades)};
  const tokens = {_script_json(e.answer_tokens)};
  const root = document.currentScript.previousElementSibling;
  function show(k) {{
    root.querySelectorAll('figure.map').forEach(f => {{
      const i = +f.dataset.i;
      f.querySelector('img.heat').src = pictures[i][k];
      f.querySelector('.low').textContent = ranges[i][k][0];
      f.querySelector('.high').textContent = ranges[i][k][1];
    }});
    root.querySelectorAll('.word').forEach((w, j) => w.style.cssText = shades[k][j]);
    root.querySelectorAll('.tok').forEach(s => s.classList.toggle('on', +s.dataset.t === k - 1));
    const shown = k === 0 ? 'whole answer' : 'token ' + (k - 1) + ' ' + JSON.stringify(tokens[k - 1]);
    root.querySelector('.showing').textContent = 'Showing: ' + shown;
  }}
  const opacity = root.querySelector('input.opacity');
  opacity.addEventListener('input', () => root.querySelectorAll('img.heat').forEach(img => img.style.opacity = opacity.value));
  root.querySelectorAll('.tok').forEach(s => s.addEventListener('click', () => show(+s.dataset.t + 1)));
  root.querySelector('a.all').addEventListener('click', ev => {{ ev.preventDefault(); show(0); }});
}})();
</script>"""
    style = f"""<style>
.glimpse-report{{font-family:system-ui,sans-serif;max-width:1100px;overflow-wrap:anywhere}}
.glimpse-report .tok{{cursor:pointer;padding:1px 2px;border-radius:3px;white-space:pre-wrap}}
.glimpse-report .tok.on{{outline:2px solid #1565c0}}
.glimpse-report .word{{padding:1px 3px;border-radius:3px}}
.glimpse-report .images{{display:flex;flex-wrap:wrap;gap:12px}}
.glimpse-report figure{{margin:0;max-width:100%}}
.glimpse-report .stack{{position:relative;max-width:100%}}
.glimpse-report .stack img{{display:block;width:100%;height:auto}}
.glimpse-report .stack img.heat{{position:absolute;left:0;top:0;height:100%;opacity:{ALPHA}}}
.glimpse-report .colourbar{{display:flex;align-items:center;gap:6px;font-size:12px;margin:4px 0}}
.glimpse-report .colourbar .bar{{flex:1;height:10px;background:{colour_gradient()}}}
.glimpse-report .swatch{{display:inline-block;width:80px;height:10px;vertical-align:middle;
  background:linear-gradient(to right,{css_rgb(*shade_rgb(0))},{css_rgb(*shade_rgb(1))})}}
.glimpse-report .table{{overflow-x:auto}}
.glimpse-report table{{border-collapse:collapse;margin-top:12px;font-size:13px}}
.glimpse-report td,.glimpse-report th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
.glimpse-report td.text{{text-align:start;white-space:pre-wrap}}
.glimpse-report .meta,.glimpse-report .controls{{color:#555;font-size:13px}}
.glimpse-report .notes{{background:#fff4e5;border-left:4px solid #f57c00;padding:4px 10px;font-size:13px}}
.glimpse-report .details{{font-size:13px}}
</style>"""
    if not standalone:
        return style + body
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>glimpse: {html.escape(e.question)}</title>"
            f"{style}</head><body>{body}</body></html>")
