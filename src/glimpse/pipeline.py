"""`explain`: one call from (model, processor, image, prompt) to an `Explanation` (the whole pipeline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .errors import AnswerError, DomainWarning, ImageError, PromptError, ResourceError, note
from .explanation import Explanation
from .images import ImageInput, load_image
from .methods import get_method
from .methods.base import check_images
from .models import adapter_for
from .resources import is_out_of_memory, measured
from .toy.world import is_scene


def explain(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str,
            answer: str | None = None, *, method: str = "glimpse", max_new_tokens: int = 32,
            max_answer_tokens: int | None = None, system_prompt: str | None = None,
            **options: Any) -> Explanation:
    """Explain the model's answer to `prompt` about `image` (one image or a list).

    Without `answer`, the model first generates one greedily (up to `max_new_tokens`); with
    `answer`, that given text is explained (teacher forcing). `max_answer_tokens` explains only
    the first tokens of a long answer. `method` is any registered name (`glimpse.list_methods()`);
    the other keyword options go to it: each method class declares its options, their defaults
    and meanings (`glimpse methods` prints them), and an option it does not take is an error.
    Every fallback taken is warned about (`glimpse.GlimpseWarning`) and listed in `notes`.
    """
    chosen = get_method(method, **options)
    for name, value in (("max_new_tokens", max_new_tokens), ("max_answer_tokens", max_answer_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AnswerError(f"{name} must be a whole number of at least 1, got {value!r}")
    images, adapter, prompt_text, inputs = _encoded(model, processor, image, prompt, system_prompt)
    if answer is None:
        answer_ids = _generate(model, adapter, inputs, max_new_tokens)
    else:
        answer_ids = adapter.answer_ids(prompt_text, answer)
    if max_answer_tokens is not None:
        answer_ids = answer_ids[:max_answer_tokens]
    full = adapter.with_answer(inputs, answer_ids)
    layout = adapter.layout(full, images, prompt_text, prompt, len(answer_ids))
    check_images(chosen, layout)
    notes: list[str] = []
    if not layout.question_located:
        note(notes, "the question could not be located in the prompt: every non-special prompt token stands for it")
    if _is_shipped_model(model) and not all(is_scene(picture) for picture in images):
        note(notes, "the shipped default model knows only the synthetic shapes world (coloured shapes on grey); "
                    "on this image its answer and explanation mean little: load a real model for photos",
             DomainWarning)
    result, cost = _run(chosen, model, adapter, full, layout)
    if result.attention_path is not None:
        cost["attention_path"] = result.attention_path
    tokenizer = adapter.tokenizer
    return Explanation(
        question=prompt, answer=_answer_text(tokenizer, answer_ids),
        answer_tokens=[tokenizer.decode([i]) for i in answer_ids], answer_token_ids=list(answer_ids),
        answer_generated=answer is None, prompt_words=list(layout.prompt_words),
        word_of_token=list(layout.word_of_token), images=images, layouts=list(layout.images),
        **{k: _np(getattr(result, k)) for k in ("token_visual", "visual", "token_prompt", "prompt", "token_weights",
                                                 "probs")},
        ranking=_np(chosen.rank_tokens(result)), ranking_by=chosen.token_ranking, explained=chosen.explains,
        details={k: _np(v) for k, v in result.details.items()}, details_doc=dict(chosen.details),
        notes=notes + result.notes, layers=list(result.layers),
        method=chosen.name, params=chosen.params(), model_id=_model_id(model), version=__version__,
        question_located=layout.question_located, approximate=chosen.approximate, cost=cost)


def generate_answer(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str, *,
                    max_new_tokens: int = 32, system_prompt: str | None = None) -> str:
    """The model's greedy answer to `prompt` about `image`, as `explain` would generate it, as the
    text its `answer=` takes: so that several methods can explain one answer generated once."""
    _, adapter, _, inputs = _encoded(model, processor, image, prompt, system_prompt)
    return _answer_text(adapter.tokenizer, _generate(model, adapter, inputs, max_new_tokens))


def _encoded(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], prompt: str,
             system_prompt: str | None) -> tuple[list[Any], Any, str, dict[str, torch.Tensor]]:
    """The prompt checked, the images read, the model's adapter, the rendered prompt and the model's inputs."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty: give the question to ask about the image")
    sources = image if isinstance(image, (list, tuple)) else [image]
    if not sources:
        raise ImageError("no image given: pass an image (a path, a PIL image or an array) or a list of them")
    images = [load_image(x) for x in sources]
    adapter = adapter_for(model, processor)
    prompt_text = adapter.render_prompt(prompt, len(images), system_prompt)
    return images, adapter, prompt_text, model_inputs(adapter.encode(images, prompt_text), model)


def _answer_text(tokenizer: Any, answer_ids: list[int]) -> str:
    return tokenizer.decode(answer_ids, skip_special_tokens=True).strip()


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
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
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


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        for name in ("eos_token_id", "pad_token_id"):
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
