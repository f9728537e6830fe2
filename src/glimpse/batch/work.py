"""One item of a batch run explained by each method and recorded: the work both engines share.

A method that fails on an item (an unreadable image, out of memory, any exception) gives a record
with status "failed" and the error; the run goes on. The warnings of an explanation are not
printed per item: they are in the record's notes.
"""

from __future__ import annotations

import json
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from safetensors.numpy import save as safetensors_bytes

from ..errors import GlimpseError, GlimpseWarning
from ..eval.metrics import box_mask
from ..images import load_image
from .items import Item
from .store import ITEMS, METRICS, Store, item_key, method_file


@dataclass(frozen=True)
class Settings:
    """What every item of a run is explained with: (label, method, all its options) for each
    method or variant, the answer limits, whether to draw each item's overlay and report, and the
    share of a continuous human attention map's pixels that count as fixations (`fixations_from_map`)."""

    methods: tuple[tuple[str, str, dict[str, Any]], ...]
    max_new_tokens: int = 32
    max_answer_tokens: int | None = None
    figures: bool = False
    fixation_top: float = 0.1


def explain_item(model: Any, processor: Any, item: Item, settings: Settings, store: Store,
                 methods: list[str] | None = None) -> list[dict[str, Any]]:
    """Explain `item` with each method of `settings` (or only those labelled in `methods`), write
    each record, return them."""
    import glimpse

    records = []
    for label, name, options in settings.methods:
        if methods is not None and label not in methods:
            continue
        base = {"ordinal": item.ordinal, "id": item.id, "method": label, "question": item.question,
                "expected_answer": item.expected_answer, "ground_truth": ground_truth(item),
                "images": item.image_sources(), "options": json.dumps(options, sort_keys=True)}
        try:
            images = [load_image(x) for x in item.images]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GlimpseWarning)
                explanation = glimpse.explain(model, processor, images, item.question, answer=item.answer, method=name,
                                              max_new_tokens=settings.max_new_tokens,
                                              max_answer_tokens=settings.max_answer_tokens, **options)
        except Exception as exc:  # recorded, and the run goes on (KeyboardInterrupt is not an Exception)
            record = {**base, "status": "failed", "error": error_text(exc),
                      "traceback": None if isinstance(exc, GlimpseError) else traceback.format_exc()}
            store.write(item.id, label, record, {})
            records.append(record)
            continue
        record, files = _done(item, label, explanation, base, settings)
        store.write(item.id, label, record, files)
        records.append(record)
    return records


def ground_truth(item: Item) -> dict[str, Any]:
    """The item's ground truth as the record keeps it (paths as text)."""
    return {"mask": _text_or_none(item.mask), "box": None if item.box is None else list(item.box),
            "fixations": _text_or_none(item.fixations), "attention_map": _text_or_none(item.attention_map),
            "question_fixations": None if item.question_fixations is None else list(item.question_fixations),
            "objects": _text_or_none(item.objects)}


def _text_or_none(path: Any) -> str | None:
    return None if path is None else str(path)


def any_failed(records: list[dict[str, Any]]) -> bool:
    """An item failed when any of its methods did."""
    return any(record["status"] == "failed" for record in records)


def same_answer(answer: str, expected: str) -> bool:
    """Exact match after case folding and collapsing white space."""
    return " ".join(answer.casefold().split()) == " ".join(expected.casefold().split())


def error_text(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _done(item: Item, label: str, explanation: Any, base: dict[str, Any],
          settings: Settings) -> tuple[dict[str, Any], dict[str, bytes]]:
    notes = list(explanation.notes)
    metrics = ground_truth_metrics(item, explanation, notes, settings.fixation_top)
    stem = method_file(label)
    arrays = f"{ITEMS}/{item_key(item.id)}/{stem}.safetensors"
    files = {f"{stem}.safetensors": safetensors_bytes(explanation.arrays())}
    if settings.figures:
        files[f"{stem}.png"] = _png(explanation.to_png())
        files[f"{stem}.html"] = explanation.to_html().encode()
    cost = explanation.cost
    peak = cost.get("peak_memory_bytes")
    record = {**base, "status": "done", "error": None, "answer": explanation.answer,
              "correct": None if item.expected_answer is None else same_answer(explanation.answer, item.expected_answer),
              "answer_generated": explanation.answer_generated, "answer_tokens": list(explanation.answer_tokens),
              "token_weights": [float(w) for w in explanation.token_weights], "seconds": cost.get("seconds"),
              "peak_memory_mb": None if peak is None else peak / 2**20, "notes": notes, "arrays": arrays,
              **{name: metrics.get(name) for name in METRICS},
              "explanation": explanation.to_dict()}
    return record, files


def evidence_mask(item: Item, size: tuple[int, int]) -> np.ndarray | None:
    """The item's ground truth on its first image ([height, width] bool), from its mask or its box."""
    return evidence(item.mask, item.box, size)


def evidence(mask: Any, box: Any, size: tuple[int, int]) -> np.ndarray | None:
    """Ground truth on an image of `size` (width, height) from a mask's path or else a box; None without either."""
    width, height = size
    if mask is not None:
        pixels = read_mask(mask, "mask")
        if pixels.shape != (height, width):
            raise GlimpseError(f"the mask {mask} is {pixels.shape[1]}x{pixels.shape[0]}, the image {width}x{height}")
        return pixels
    if box is not None:
        return box_mask(box, height, width)
    return None


def read_mask(path: Any, what: str) -> np.ndarray:
    """The non-zero pixels of a grey-level image (a mask) as bool."""
    return _grey(path, what) > 0


def ground_truth_metrics(item: Item, explanation: Any, notes: list[str], fixation_top: float = 0.1) -> dict[str, Any]:
    """The metrics the item's ground truth allows (none without); ground truth that does not fit
    the image gives a note instead, and the explanation is kept.

    NSS and AUC-Judd are scored on the `fixations`, or else on the top `fixation_top` share of the
    `attention_map`'s pixels; CC, KL and SIM on the attention map, or else on the fixations. The
    question's words are scored against `question_fixations` (Pearson and Spearman)."""
    from ..eval import energy_in_mask, pointing_game

    metrics: dict[str, Any] = {}
    size = explanation.images[0].size
    try:
        mask = evidence_mask(item, size)
        if mask is not None:
            metrics.update(pointing_game=pointing_game(explanation, mask), energy_in_mask=energy_in_mask(explanation, mask))
    except GlimpseError as exc:
        notes.append(f"no mask metrics: {exc}")
    try:
        metrics.update(_human_metrics(item, explanation, fixation_top))
    except GlimpseError as exc:
        notes.append(f"no fixation metrics: {exc}")
    try:
        metrics.update(_word_metrics(item, explanation))
    except GlimpseError as exc:
        notes.append(f"no prompt-word metrics: {exc}")
    return metrics


def _human_metrics(item: Item, explanation: Any, fixation_top: float) -> dict[str, float]:
    from ..eval import auc_judd, cc, fixations_from_map, kl_div, nss, sim

    if item.fixations is None and item.attention_map is None:
        return {}
    human = _grey(item.attention_map, "attention map") if item.attention_map is not None else None
    fixations = _grey(item.fixations, "fixation map") if item.fixations is not None else None
    if fixations is None:
        fixations = fixations_from_map(human, fixation_top)
    saliency = explanation.visual_map(0, resolution="image")
    density = fixations if human is None else human
    return {"nss": nss(saliency, fixations), "auc_judd": auc_judd(saliency, fixations),
            **{name: score(saliency, density) for name, score in (("cc", cc), ("kl_div", kl_div), ("sim", sim))}}


def _word_metrics(item: Item, explanation: Any) -> dict[str, float]:
    from ..eval import prompt_cc, prompt_spearman

    if item.question_fixations is None:
        return {}
    if not explanation.question_located or len(explanation.prompt_words) != len(item.question_fixations):
        raise GlimpseError(f"the explanation scores {len(explanation.prompt_words)} prompt word(s), the gaze "
                           f"{len(item.question_fixations)}")
    scores, gaze = explanation.prompt_word_scores, np.asarray(item.question_fixations)
    return {"prompt_cc": prompt_cc(scores, gaze), "prompt_spearman": prompt_spearman(scores, gaze)}


def _grey(path: Any, what: str) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("F"), dtype=np.float64)
    except OSError as exc:
        raise GlimpseError(f"cannot read the {what} {path} ({exc})") from None


def _png(picture: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
