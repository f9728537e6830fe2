"""`glimpse serve`: a Gradio app over the library, for exploring one example at a time.

Thin by design: every number it shows comes from `glimpse.explain` and the `Explanation` it
returns; the pictures from `render`. One model is loaded once; explanations run one at a time
(Gradio's queue, concurrency 1, and a lock), so requests queue instead of competing for memory.
Errors are shown in the page as one line (never a stack trace); every text shown is escaped.
"""

from __future__ import annotations

import html
import json
import shutil
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .batch.work import error_text
from .errors import GlimpseError
from .explanation import Explanation
from .render import ALPHA, colour_gradient, map_range, overlay, shade, unit_scale

MAX_PIXELS = 25_000_000  # larger uploads are refused before any work: a 7B model's processor would resize anyway
MAX_FILE_SIZE = "20mb"
WHOLE = "whole answer"
NONE = "none"


def install_hint() -> str:
    return "the web app needs Gradio: pip install 'glimpse-lvlm[ui]'"


def build_app(model: str | None = None, device: str = "auto") -> Any:
    """The Gradio Blocks app serving `model` (None: the shipped shapes-world model)."""
    try:
        import gradio as gr
    except ImportError:
        raise GlimpseError(install_hint()) from None
    import glimpse

    from .methods import list_methods

    loaded = glimpse.load(model, device=device)
    lock = threading.Lock()
    methods = list(list_methods())
    toy = model is None

    def explain(picture, question, answer, method, options_text, second, progress=gr.Progress()):
        try:
            if picture is None:
                raise GlimpseError("upload an image first (PNG, JPEG, WebP, ...)")
            if not (question or "").strip():
                raise GlimpseError("type a question")
            progress(0.1, desc=f"explaining with {method}")
            options = _options(method, options_text)
            with lock:
                first = glimpse.explain(loaded.model, loaded.processor, picture, question,
                                        answer=(answer or "").strip() or None, method=method, **options)
                progress(0.6, desc=f"explaining with {second}")
                other = (glimpse.explain(loaded.model, loaded.processor, picture, question, answer=first.answer,
                                         method=second) if second and second != NONE else None)
            progress(0.9, desc="saving")
            state = {"first": first, "second": other, "download": _download(first)}
        except Exception as exc:  # shown in the page; the traceback goes to the server's log only
            return (None, _message(exc), "", gr.update(choices=[WHOLE], value=WHOLE), None, None, "", "", None)
        return (state, "", _answer_html(first), gr.update(choices=_token_choices(first), value=WHOLE),
                *_pictures(state, WHOLE, ALPHA), _colour_bar(first, None), _prompt_html(first, None), state["download"])

    def show(state, choice, opacity):
        if not state:
            return None, None, "", ""
        token = _token_index(choice)
        return (*_pictures(state, choice, opacity), _colour_bar(state["first"], token),
                _prompt_html(state["first"], token))

    def method_options(method):
        from .methods import method_class, option_defaults

        cls = method_class(method)
        text = "\n".join(f"{name}={json.dumps(value)}" for name, value in option_defaults(cls).items())
        notes = "\n".join(f"- `{name}`: {html.escape(doc)}" for name, doc in cls.options.items())
        return text, f"**{html.escape(cls.summary)}**\n\n{notes or 'No options.'}"

    def uploaded(path):
        if path is None:
            return None, None, ""
        try:
            picture = read_upload(Path(path))
        except GlimpseError as exc:
            return None, None, _message(exc)
        return picture, picture, ""

    def new_scene():
        from .toy import world

        scene = world.make_scene(np.random.default_rng())
        questions = [question for question, _ in world.scene_questions(scene)]
        return scene.image, scene.image, gr.update(choices=questions, value=questions[0]), questions[0], ""

    with gr.Blocks(title="glimpse") as app:
        gr.Markdown("# glimpse: what did the model look at?\nUpload an image, ask a question, and see the map of "
                    "each method over the image, for the whole answer and token by token.")
        state, picture = gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column():
                # A file, read by the library: a bad upload gets its message, not a failed component.
                upload = gr.File(label="image file", type="filepath", elem_id="upload")
                preview = gr.Image(type="pil", interactive=False, label="image", elem_id="preview")
                if toy:
                    scene = gr.Button("new shapes-world scene", elem_id="scene")
                    suggested = gr.Dropdown(choices=[], label="suggested questions", elem_id="suggested")
            with gr.Column():
                question = gr.Textbox(label="question", elem_id="question")
                answer = gr.Textbox(label="answer to explain (optional: empty = the model's own answer)",
                                    elem_id="answer")
                method = gr.Dropdown(choices=methods, value=methods[0], label="method", elem_id="method")
                options = gr.Textbox(label="options (KEY=VALUE, one per line)", lines=3, elem_id="options")
                with gr.Accordion("what the options do", open=False):
                    help_text = gr.Markdown()
                second = gr.Dropdown(choices=[NONE, *methods], value=NONE, label="compare with", elem_id="second")
                run = gr.Button("explain", variant="primary", elem_id="explain")
        message = gr.HTML(elem_id="message")
        answer_view = gr.HTML(elem_id="answer-view")
        token = gr.Radio(choices=[WHOLE], value=WHOLE, label="map of", elem_id="token")
        opacity = gr.Slider(0.0, 1.0, value=ALPHA, step=0.05, label="opacity", elem_id="opacity")
        with gr.Row():
            first_map = gr.Image(label="map", type="pil", interactive=False, elem_id="map")
            second_map = gr.Image(label="compared method's map", type="pil", interactive=False, elem_id="second-map")
        colour_bar = gr.HTML(elem_id="colour-bar")
        prompt_view = gr.HTML(elem_id="prompt-view")
        download = gr.File(label="explanation folder (JSON, arrays, PNG, HTML)", elem_id="download")

        method.change(method_options, method, [options, help_text])
        app.load(method_options, method, [options, help_text])
        upload.change(uploaded, upload, [picture, preview, message])
        run.click(explain, [picture, question, answer, method, options, second],
                  [state, message, answer_view, token, first_map, second_map, colour_bar, prompt_view, download])
        token.change(show, [state, token, opacity], [first_map, second_map, colour_bar, prompt_view])
        opacity.release(show, [state, token, opacity], [first_map, second_map, colour_bar, prompt_view])
        if toy:
            scene.click(new_scene, None, [picture, preview, suggested, question, message])
            suggested.input(lambda text: text, suggested, question)
    app.queue(default_concurrency_limit=1, max_size=32)
    return app


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 7860, device: str = "auto") -> None:
    """Build the app and serve it until interrupted (127.0.0.1 by default: this machine only)."""
    app = build_app(model, device)
    app.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE, show_error=False)


# --- pieces -------------------------------------------------------------------------------------
def read_upload(path: Path) -> Image.Image:
    """The uploaded file as an RGB image: its size checked before its pixels are decoded; errors
    name the file, not where the server keeps it."""
    from .images import load_image

    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except Image.DecompressionBombError:
        raise GlimpseError(f"{path.name} has more than {MAX_PIXELS:,} pixels") from None
    except OSError:
        raise GlimpseError(f"{path.name} is not an image file (PNG, JPEG, WebP, ...)") from None
    if width * height > MAX_PIXELS:
        raise GlimpseError(f"{path.name} has {width} x {height} pixels; at most {MAX_PIXELS:,} are taken")
    try:
        return load_image(path)
    except GlimpseError as exc:
        raise GlimpseError(str(exc).replace(str(path), path.name)) from None


def _options(method: str, text: str | None) -> dict[str, Any]:
    from .methods import get_method, parse_options

    options = parse_options([line.strip() for line in (text or "").splitlines() if line.strip()])
    get_method(method, **options)  # an option the method does not take is refused here, in words
    return options


def _message(exc: Exception) -> str:
    if isinstance(exc, GlimpseError):
        text = str(exc)
    else:
        traceback.print_exc()
        text = f"something went wrong: {error_text(exc)}"
    return f'<p class="error" role="alert" style="color:#b00020"><b>error:</b> {html.escape(text)}</p>'


def _token_choices(explanation: Explanation) -> list[str]:
    return [WHOLE, *[f"{t}: {text.strip() or repr(text)}" for t, text in enumerate(explanation.answer_tokens)]]


def _token_index(choice: str | None) -> int | None:
    return None if not choice or choice == WHOLE else int(choice.split(":", 1)[0])


def _pictures(state: dict[str, Any], choice: str, opacity: float) -> tuple[Image.Image | None, Image.Image | None]:
    # The compared method explained the same answer with the same model: the same tokens.
    token = _token_index(choice)
    first, second = state["first"], state["second"]
    return overlay(first, 0, token, opacity), None if second is None else overlay(second, 0, token, opacity)


def _answer_html(explanation: Explanation) -> str:
    """The answer's tokens, each shaded by its weight in the holistic map."""
    spans = "".join(f'<span title="weight {w:.3f}" style="{shade(u)};padding:1px 2px;margin:0 1px">'
                    f'{html.escape(t)}</span>'
                    for t, w, u in zip(explanation.answer_tokens, explanation.token_weights,
                                       unit_scale(explanation.token_weights)))
    return (f'<p dir="auto"><b>answer</b> ({html.escape(explanation.method)}; tokens shaded by their weight in the '
            f'whole-answer map): <span class="answer">{spans}</span></p>')


def _prompt_html(explanation: Explanation, token: int | None) -> str:
    scores = explanation.prompt_word_scores if token is None else explanation.token_prompt_word_scores(token)
    words = " ".join(f'<span title="{s:.4g}" style="{shade(u)};padding:1px 2px">{html.escape(w)}</span>'
                     for w, s, u in zip(explanation.prompt_words, scores, unit_scale(np.clip(scores, 0, None))))
    return f'<p dir="auto"><b>question words</b> (shaded by their score): <span class="prompt">{words}</span></p>'


def _colour_bar(explanation: Explanation, token: int | None) -> str:
    low, high = map_range(explanation, 0, token)
    return (f'<div style="display:flex;align-items:center;gap:6px"><span>{low:.3g}</span><span aria-label="colour bar" '
            f'style="display:inline-block;width:256px;height:12px;background:{colour_gradient()}"></span>'
            f"<span>{high:.3g}</span> (the map's values, min-max normalised over the pixels the model saw)</div>")


def _download(explanation: Explanation) -> str:
    folder = Path(tempfile.mkdtemp(prefix="glimpse-serve-"))
    explanation.save(folder / "explanation")
    return shutil.make_archive(str(folder / "explanation"), "zip", folder / "explanation")
