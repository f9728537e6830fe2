"""`explain`: one call from (model, processor, image, prompt) to an `Explanation` (the whole pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__, progress
from .errors import AnswerError, DomainWarning, ImageError, InputWarning, PromptError, ResourceError, collected, note
from .explanation import Explanation
from .images import ImageInput, load_image
from .limits import DEFAULT_MAX_ANSWER_TOKENS
from .methods import get_method
from .methods.base import check_images
from .models import adapter_for, text
from .render import model_name
from .resources import is_out_of_memory, measured
from .toy import world


def explain(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str,
            answer: str | None = None, *, method: str = "glimpse", max_new_tokens: int = 32,
            max_answer_tokens: int | None = None, system_prompt: str | None = None,
            **options: Any) -> Explanation:
    """Explain the model's answer to `prompt` about `image` (one image or a list).

    Without `answer`, the model first generates one greedily (up to `max_new_tokens`); with
    `answer`, that given text is explained (teacher forcing). Only the first `max_answer_tokens`
    answer tokens are explained: None means `DEFAULT_MAX_ANSWER_TOKENS` (64), and an answer cut at
    that default is warned about (`InputWarning`); a larger number raises the cap. Answer words the
    tokenizer does not know are warned about too; an answer with no known token is an `AnswerError`.
    Prompt, image tokens and answer must fit the model's context length (its config's
    `max_position_embeddings`, where it gives one): a longer input is refused before any forward
    pass. `method` is any registered name (`glimpse.list_methods()`);
    the other keyword options go to it: each method class declares its options, their defaults
    and meanings (`glimpse methods` prints them), and an option it does not take is an error.
    Every fallback taken is warned about (`glimpse.GlimpseWarning`) and listed in `notes`.
    """
    chosen = get_method(method, **options)
    for name, value in (("max_new_tokens", max_new_tokens), ("max_answer_tokens", max_answer_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AnswerError(f"{name} must be a whole number of at least 1, got {value!r}")
    notes: list[str] = []
    images, adapter, prompt_text, inputs = _encoded(model, processor, image, prompt, system_prompt, notes)
    room = _room(adapter, inputs)
    if answer is None:
        answer_ids = _generate(model, adapter, inputs, min(max_new_tokens, room))
        if len(answer_ids) == room < max_new_tokens:
            note(notes, f"the answer was generated up to the model's context length ({adapter.context_length()} "
                        f"tokens): it stops after {room} tokens, perhaps unfinished", InputWarning)
    else:
        answer_ids = _given_answer(adapter, prompt_text, answer, notes)
    limit = DEFAULT_MAX_ANSWER_TOKENS if max_answer_tokens is None else max_answer_tokens
    if len(answer_ids) > limit:
        if max_answer_tokens is None:
            note(notes, f"the answer has {len(answer_ids)} tokens; only its first {limit} are explained (the default "
                        f"cap): give max_answer_tokens={len(answer_ids)} to explain all of it", InputWarning)
        answer_ids = answer_ids[:limit]
        if answer is not None and not text.known_ids(adapter.tokenizer, answer_ids):
            raise AnswerError(f"the first {limit} answer token(s), all that are explained, hold no word the model "
                              "knows; give a larger max_answer_tokens")
    _check_length(adapter, inputs, len(answer_ids))
    _note_unknown_question_words(model, adapter.tokenizer, prompt, notes)
    full = adapter.with_answer(inputs, answer_ids)
    layout = adapter.layout(full, images, prompt_text, prompt, len(answer_ids))
    check_images(chosen, layout)
    if not layout.question_located:
        note(notes, "the question could not be located in the prompt: every non-special prompt token stands for it")
    _note_cropped(layout.images, notes)
    if _is_shipped_model(model) and not all(world.is_scene(picture) for picture in images):
        note(notes, "the shipped default model knows only the synthetic shapes world (coloured shapes on grey); "
                    "on this image its answer and explanation mean little: load a real model for photos",
             DomainWarning)
    result, cost = _run(chosen, model, adapter, full, layout)
    if result.attention_path is not None:
        cost["attention_path"] = result.attention_path
    tokenizer = adapter.tokenizer
    return Explanation(
        question=prompt, answer=_answer_text(tokenizer, answer_ids),
        answer_tokens=text.token_texts(tokenizer, answer_ids), answer_token_ids=list(answer_ids),
        answer_generated=answer is None, prompt_words=list(layout.prompt_words),
        word_of_token=list(layout.word_of_token), images=images, layouts=list(layout.images),
        **{k: _np(getattr(result, k)) for k in ("token_visual", "visual", "token_prompt", "prompt", "token_weights",
                                                 "probs")},
        ranking=_np(chosen.rank_tokens(result)), ranking_by=chosen.token_ranking, explained=chosen.explains,
        details={k: _np(v) for k, v in result.details.items()}, details_doc=dict(chosen.details),
        notes=notes + result.notes, layers=list(result.layers),
        method=chosen.name, params=chosen.params(), model_id=model_name(_model_id(model)), version=__version__,
        model_revision=getattr(model.config, "_commit_hash", None),
        question_located=layout.question_located, approximate=chosen.approximate, cost=cost)


def generate_answer(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str, *,
                    max_new_tokens: int = 32, system_prompt: str | None = None) -> str:
    """The model's greedy answer to `prompt` about `image`, as `explain` would generate it, as the
    text its `answer=` takes: so that several methods can explain one answer generated once."""
    _, adapter, _, inputs = _encoded(model, processor, image, prompt, system_prompt, [])
    room = _room(adapter, inputs)
    return _answer_text(adapter.tokenizer, _generate(model, adapter, inputs, min(max_new_tokens, room)))


def _encoded(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str,
             system_prompt: str | None, notes: list[str]) -> tuple[list[Any], Any, str, dict[str, torch.Tensor]]:
    """The prompt checked, the images read (what reading them warned of noted), the model's adapter,
    the rendered prompt and the model's inputs."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty: give the question to ask about the image")
    sources = image if isinstance(image, (list, tuple)) else [image]
    if not sources:
        raise ImageError("no image given: pass an image (a path, a PIL image or an array) or a list of them")
    images = _read_images(sources, notes)
    adapter = adapter_for(model, processor)
    for name, value in (("prompt", prompt), ("system prompt", system_prompt)):
        _refuse_placeholders(adapter, value, name, PromptError)
    prompt_text = adapter.render_prompt(prompt, len(images), system_prompt)
    return images, adapter, prompt_text, model_inputs(adapter.encode(images, prompt_text), model)


def _read_images(sources: Sequence[ImageInput], notes: list[str]) -> list[Any]:
    """The images as RGB; each conversion reading them warned of (a 16-bit image, a multi-frame file) noted."""
    with collected(InputWarning) as messages:
        images = [load_image(x) for x in sources]
    for message in messages:
        note(notes, message, InputWarning)
    return images


def _refuse_placeholders(adapter: Any, value: str | None, name: str, error: type[Exception]) -> None:
    """`error` when `value` holds one of the model's image placeholder texts (which glimpse inserts)."""
    found = [marker for marker in adapter.image_placeholders() if isinstance(value, str) and marker in value]
    if found:
        raise error(f"the {name} contains {found[0]!r}, the model's image placeholder: remove it from the {name}; "
                    "glimpse puts the image(s) into the model's input itself")


def _note_unknown_question_words(model: Any, tokenizer: Any, question: str, notes: list[str]) -> None:
    """A warning naming the question's words the tokenizer does not know (the model reads its unknown
    token, or nothing, for them); for the shipped model, with the questions it was trained on."""
    unknown, dropped = text.unknown_words(tokenizer, question)
    if not unknown and not dropped:
        return
    forms = ""
    if _is_shipped_model(model):
        forms = (f"; the shipped shapes-world model knows only its {len(world.vocabulary())} words and was trained "
                 "on four questions: "
                 + ", ".join(f'"{form}"' for form in world.QUESTION_FORMS)
                 + f" (shapes: {', '.join(world.SHAPES)}; colours: {', '.join(world.COLORS)})")
    note(notes, f"the question's word(s) {_quoted(unknown + dropped)} are not in the model's vocabulary: it reads "
                f"them as {'its unknown token ' + repr(tokenizer.unk_token) if unknown else 'nothing'}, so its answer "
                f"may mean little{forms}", InputWarning)


def _given_answer(adapter: Any, prompt_text: str, answer: str, notes: list[str]) -> list[int]:
    """The token ids of a given answer; an AnswerError when no token of it is known text, a warning
    naming the words that become the unknown token or no token at all."""
    if not isinstance(answer, str):
        raise AnswerError(f"the answer must be text, got {type(answer).__name__}")
    _refuse_placeholders(adapter, answer, "answer", AnswerError)
    ids = adapter.answer_ids(prompt_text, answer)
    tokenizer = adapter.tokenizer
    unknown, dropped = text.unknown_words(tokenizer, answer)
    if not text.known_ids(tokenizer, ids):
        special = [i for i in dict.fromkeys(ids) if i in set(tokenizer.all_special_ids)
                   and i != getattr(tokenizer, "unk_token_id", None)]
        ends = _stop_ids(adapter.model, tokenizer, ("eos_token_id",))
        names = [repr(tokenizer.decode([i])) + (" (the end of sequence)" if i in ends else "") for i in special]
        what = "; ".join(part for part in (
            f"{_quoted(unknown + dropped)} {'is' if len(unknown + dropped) == 1 else 'are'} not in its vocabulary"
            if unknown or dropped else "",
            f"{', '.join(names)} {'is a special token' if len(names) == 1 else 'are special tokens'}, not text"
            if names else "") if part)
        raise AnswerError(f"the answer {answer!r} holds no word the model knows ({what or 'no known token'}): "
                          "give the answer in words of the model's vocabulary")
    if unknown:
        note(notes, f"the answer's word(s) {_quoted(unknown)} are not in the model's vocabulary: explained as its "
                    f"unknown token {tokenizer.unk_token!r}", InputWarning)
    if dropped:
        note(notes, f"the answer's word(s) {_quoted(dropped)} become no token of the model's: left out of the "
                    "explained answer", InputWarning)
    return ids


def _quoted(words: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(repr(w) for w in words[:most])
    return shown + (f" and {len(words) - most} more" if len(words) > most else "")


def _room(adapter: Any, inputs: dict[str, torch.Tensor]) -> int:
    """How many answer tokens fit after the prompt in the model's context (a PromptError when none
    does); unbounded where the model's config gives no context length."""
    _check_length(adapter, inputs, 1, prompt_only=True)
    context = adapter.context_length()
    return (1 << 62) if context is None else context - inputs["input_ids"].shape[1]


def _check_length(adapter: Any, inputs: dict[str, torch.Tensor], n_answer: int, prompt_only: bool = False) -> None:
    """Refuse, before any forward pass, an input longer than the model's context length: prompt
    (with its image tokens) plus `n_answer` answer tokens (`prompt_only`: whether the prompt leaves
    room for one). A PromptError when the prompt alone leaves no room for an answer, else an
    AnswerError; no check when the length is unknown."""
    context = adapter.context_length()
    n_prompt = int(inputs["input_ids"].shape[1])
    if context is None or n_prompt + n_answer <= context:
        return
    try:
        n_image = len(adapter.image_token_positions(inputs))
    except (AttributeError, KeyError, TypeError):  # a family without one image token id
        n_image = None
    images = f", {n_image} of them standing for the image(s)" if n_image else ""
    if prompt_only:
        lengths = (f"the prompt is {n_prompt} tokens{images}: it leaves no room for an answer in the model's "
                   f"context length of {context} tokens")
    else:
        lengths = (f"the prompt is {n_prompt} tokens{images}, and the answer {n_answer}: {n_prompt + n_answer} in "
                   f"all, more than the model's context length of {context} tokens")
    if n_prompt < context:
        raise AnswerError(f"{lengths}; shorten the answer or the prompt, or explain fewer answer tokens "
                          f"(max_answer_tokens {context - n_prompt} at most here)")
    if n_image and n_image >= context:
        raise PromptError(f"{lengths}; the image tokens alone do not fit: give fewer or smaller images")
    if n_image:
        images_too = ", or give fewer or smaller images" if n_image > n_prompt - n_image else ""
        raise PromptError(f"{lengths}; shorten the prompt (or the system prompt: their text takes "
                          f"{n_prompt - n_image} tokens){images_too}")
    raise PromptError(f"{lengths}; shorten the prompt (or the system prompt) to leave room for the answer")


def _answer_text(tokenizer: Any, answer_ids: list[int]) -> str:
    return tokenizer.decode(answer_ids, skip_special_tokens=True).strip()


CROPPED = 0.5  # below this share of an image seen by the model, the map leaves most of the picture blank


def _note_cropped(layouts: Sequence[Any], notes: list[str]) -> None:
    """Say when the processor cropped most of an image away: its map covers only what the model saw."""
    from . import maps

    for i, layout in enumerate(layouts):
        seen = float(maps.coverage(layout.within(256)).mean())
        if seen < CROPPED:
            note(notes, f"the model's processor kept {seen:.0%} of image {i} (it crops to its own shape): the map "
                        "covers only that part; pad the image to the model's aspect ratio to explain all of it",
                 InputWarning)


def _run(method: Any, model: Any, adapter: Any, inputs: dict[str, torch.Tensor],
         layout: Any) -> tuple[Any, dict[str, Any]]:
    """The method's run, measured (`resources.measured`); running out of memory is a ResourceError."""
    try:
        with measured(model.device) as cost:
            result = method.run(model, adapter, inputs, layout)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(exc):
            raise
        raise ResourceError(_out_of_memory(method, layout, exc)) from None
    return result, cost


def _out_of_memory(method: Any, layout: Any, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"{method.name} ran out of memory on a sequence of {layout.length} tokens with {len(layout.answer)} answer "
            f"token(s) ({first}); explain fewer answer tokens (max_answer_tokens), fewer layers (layer_fraction, for "
            "GLIMPSE), with GLIMPSE's path='blockwise' (memory linear in the sequence length) and a smaller or no "
            "max_memory, a smaller image, or use a device with more memory")


def _is_shipped_model(model: Any) -> bool:
    from .toy.model import default_model_path

    return Path(_model_id(model)).resolve() == default_model_path().resolve()


def _generate(model: Any, adapter: Any, inputs: dict[str, torch.Tensor], max_new_tokens: int) -> list[int]:
    with torch.no_grad(), progress.steps(max_new_tokens, "generating") as bar:
        streamer = None if bar.disable else progress.token_streamer(bar)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    stop = _stop_ids(model, adapter.tokenizer)
    for i, token in enumerate(new):
        if token in stop:
            new = new[:i]
            break
    if not new:
        raise AnswerError("the model generated an empty answer (end of sequence at once); give an answer to explain "
                          "instead")
    return new


def _stop_ids(model: Any, tokenizer: Any, names: tuple[str, ...] = ("eos_token_id", "pad_token_id")) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        for name in names:
            value = getattr(source, name, None)
            ids.update(value if isinstance(value, (list, tuple)) else [value] if value is not None else [])
    return ids


def model_inputs(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """The processor's tensors on the model's device, floating ones in its dtype."""
    device, dtype = model.device, model.dtype
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}


def _model_id(model: Any) -> str:
    return str(getattr(model.config, "_name_or_path", "") or type(model).__name__)


def _np(tensor: torch.Tensor):
    return tensor.detach().float().cpu().numpy()
