"""Bias: how much an answer rests on the prompt against the image, and how maps and answers move
when one word of the question is swapped (a colour, a gendered word).

Modality shares: the image share of a score vector is its positive mass on the image tokens over
its positive mass on the image and question tokens together, sum(clip(visual, 0)) /
(sum(clip(visual, 0)) + sum(clip(prompt, 0))); it is None when both masses are 0 (the method gave
no positive relevance anywhere, so no share is defined). It is a share of mass, not of
per-token density: an image of many tokens weighs more than a short question at equal density.

Counterfactual prompts: for a swap (word, replacement) whose word occurs in the question as a
whole word (any case), the original and the swapped question are explained with the same method
and options, and compared: `answer_changed` (the swapped answer differs from the original answer
with the same swap applied to it, so that an answer that only repeats the swapped word, "the red
object is ..." becoming "the blue object is ...", does not count as changed), `map_cc` (Pearson's
correlation of the two holistic maps of the first image at image resolution), `peak_moved`
(whether the highest-scoring image token of the first image differs), `image_share_change`
(swapped minus original holistic image share) and `word_score` (the swapped word's holistic
prompt-word score in the original explanation: how much the original answer rested on it).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BatchError, GlimpseError
from ..eval.metrics import cc
from ..eval.stats import bootstrap_mean
from ..explanation import Explanation
from ..images import ImageInput
from ..pipeline import explain
from ..render import data_uri, overlay
from .files import write_report

# Methods whose image and prompt scores are one row of one quantity (attention, or relevance
# propagated through attention) over all positions, so the shares compare like with like.
# TAM filters its image scores only; the pixel methods attribute pixels and question embeddings
# along separate paths or perturbations: same units, but two separate attributions.
SAME_SCALE = frozenset({"glimpse", "glimpse_fast", "raw_attention", "rollout", "gradcam_attn", "agcam", "gae"})


def modality_shares(explanation: Explanation) -> dict[str, Any]:
    """The image share, both masses and the top prompt word (the prompt word with the highest score,
    None when none scores above 0) of the holistic scores and of each answer token (see the
    module's docstring), with the method and whether its image and prompt scores are on one scale
    (`SAME_SCALE`: GLIMPSE, GLIMPSE-fast and the attention methods; not TAM or the pixel methods,
    whose shares compare two separate attributions).

    For GLIMPSE the holistic image and prompt scores weigh the answer tokens differently (beta^V
    and beta^P, each summing to 1), so the holistic share is not the mean of the tokens' shares."""
    e = explanation
    tokens = [{"token": text, **_shares(e.token_visual[t], e.token_prompt[t], e.prompt_words,
                                        e.token_prompt_word_scores(t))}
              for t, text in enumerate(e.answer_tokens)]
    return {"method": e.method, "same_scale": e.method in SAME_SCALE, "question": e.question, "answer": e.answer,
            "holistic": _shares(e.visual, e.prompt, e.prompt_words, e.prompt_word_scores), "tokens": tokens}


def _shares(visual: np.ndarray, prompt: np.ndarray, words: list[str], word_scores: np.ndarray) -> dict[str, Any]:
    image, text = (float(np.clip(np.asarray(v, dtype=np.float64), 0, None).sum()) for v in (visual, prompt))
    total = image + text
    # No word "carries the most relevance" when none carries any.
    top = words[int(np.argmax(word_scores))] if words and np.max(word_scores) > 0 else None
    return {"image_share": image / total if total > 0 else None, "image_mass": image, "prompt_mass": text,
            "top_prompt_word": top}


def batch_shares(out: str | Path, method: str = "glimpse") -> dict[str, Any]:
    """The holistic modality shares of every done item of batch folder `out` by `method`, and the
    mean image share over the items that have one, with its bootstrap 95% interval."""
    from ..batch import read_table
    from ..batch.runner import explanation_of, load_record

    rows = [r for r in read_table(out).to_pylist() if r["method"] == method and r["status"] == "done"]
    if not rows:
        raise BatchError(f"{out} holds no done explanation by {method!r}")
    # The shares need no pixels: images=[] skips reading them (and works for items held in memory).
    shares = [modality_shares(explanation_of(out, load_record(out, r["id"], method), images=[])) for r in rows]
    items = [{"id": r["id"], "question": r["question"], "answer": r["answer"], **s["holistic"]}
             for r, s in zip(rows, shares)]
    return {"method": method, "same_scale": shares[0]["same_scale"], "items": items,
            "image_share": _estimate([i["image_share"] for i in items])}


def _estimate(values: Sequence[float | bool | None]) -> dict[str, Any] | None:
    """bootstrap_mean of the values that are defined, as a dict; None when none is."""
    data = np.array([np.nan if v is None else float(v) for v in values])
    return asdict(bootstrap_mean(data)) if np.isfinite(data).any() else None


def parse_swap(text: str) -> tuple[str, str]:
    """A WORD=REPLACEMENT text as a swap (word, replacement); the word is one word."""
    word, sep, replacement = text.partition("=")
    if not sep:
        raise GlimpseError(f"a swap is WORD=REPLACEMENT (e.g. red=blue), got {text!r}")
    return check_swap(word, replacement)


def check_swap(word: str, replacement: str) -> tuple[str, str]:
    """(word, replacement) without surrounding spaces, if the word is one word and the replacement is not empty."""
    if len(word.split()) != 1 or not replacement.strip():
        raise GlimpseError(f"a swap replaces one word by a non-empty text (e.g. red=blue); got the word {word!r} "
                           f"and the replacement {replacement!r}")
    return word.strip(), replacement.strip()


def _pattern(word: str) -> re.Pattern[str]:
    # Lookarounds rather than \b, so a word that starts or ends in punctuation matches whole too.
    return re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)


def contains_word(text: str, word: str) -> bool:
    """Whether `word` occurs in `text` as a whole word, in any case."""
    return _pattern(word).search(text) is not None


def swap_word(text: str, word: str, replacement: str) -> str:
    """`text` with every whole-word occurrence of `word` (any case) replaced."""
    return _pattern(word).sub(lambda _: replacement, text)


def counterfactual(model: Any, processor: Any, image: ImageInput | Sequence[ImageInput], question: str,
                   swaps: Iterable[tuple[str, str]], method: str = "glimpse", **options: Any) -> dict[str, Any]:
    """The original question's explanation and, for each swap whose word it contains, the swapped
    question's, compared (see the module's docstring); the other swaps are listed as skipped.
    `options` go to `glimpse.explain` for both. The explanations are kept under "explanation"
    (left out of the JSON)."""
    pairs = [check_swap(word, replacement) for word, replacement in swaps]
    original = explain(model, processor, image, question, method=method, **options)
    share = modality_shares(original)["holistic"]["image_share"]
    compared = [_compare(original, share, word, replacement,
                         explain(model, processor, image, swap_word(question, word, replacement), method=method,
                                 **options))
                for word, replacement in pairs if contains_word(question, word)]
    return {"question": question, "answer": original.answer, "method": original.method, "image_share": share,
            "swaps": compared, "explanation": original,
            "skipped": [f"{w}={r}" for w, r in pairs if not contains_word(question, w)]}


def _compare(original: Explanation, share: float | None, word: str, replacement: str,
             swapped: Explanation) -> dict[str, Any]:
    new_share = modality_shares(swapped)["holistic"]["image_share"]
    echoed = swap_word(original.answer, word, replacement).strip().casefold()
    return {"word": word, "replacement": replacement, "question": swapped.question, "answer": swapped.answer,
            "answer_changed": echoed != swapped.answer.strip().casefold(), "map_cc": map_cc(original, swapped),
            "peak_moved": int(np.argmax(original.image_scores(0))) != int(np.argmax(swapped.image_scores(0))),
            "image_share": new_share,
            "image_share_change": None if share is None or new_share is None else new_share - share,
            "word_score": word_score(original, word), "explanation": swapped}


def map_cc(first: Explanation, second: Explanation) -> float:
    """Pearson's correlation of the holistic maps of two explanations' first images (image resolution)."""
    a, b = (e.visual_map(0, resolution="image") for e in (first, second))
    if np.ptp(b) == 0:
        return 0.0  # cc's own value for a constant map, which it cannot take as its second map
    # cc reads its second map as a human density (non-negative); a shift leaves Pearson's r unchanged.
    return cc(a, b - b.min())


def word_score(explanation: Explanation, word: str) -> float | None:
    """The summed holistic score of the prompt words that are `word` (any case, surrounding
    punctuation ignored); None when no prompt word is."""
    scores = [float(s) for w, s in zip(explanation.prompt_words, explanation.prompt_word_scores)
              if re.sub(r"^\W+|\W+$", "", w).casefold() == word.casefold()]
    return sum(scores) if scores else None


def counterfactual_items(model: Any, processor: Any, items: Iterable[Any], swaps: Sequence[tuple[str, str]],
                         method: str = "glimpse", progress: Callable[[int, int], None] | None = None,
                         **options: Any) -> list[dict[str, Any]]:
    """`counterfactual` of every batch item (`glimpse.batch.Item`) whose question contains a swap's
    word, with the item's id; the model answers both questions (an item's given answer is not
    used). `progress(finished, total)` is called as items finish."""
    chosen = [item for item in items if any(contains_word(item.question, word) for word, _ in swaps)]
    results = []
    for finished, item in enumerate(chosen, 1):
        results.append({"id": item.id, **counterfactual(model, processor, item.images, item.question, swaps, method,
                                                        **options)})
        if progress is not None:
            progress(finished, len(chosen))
    return results


def counterfactual_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Over every applied swap of `results`: the share of changed answers, of moved peaks, and the
    mean map CC, each with a bootstrap 95% interval (None without an applied swap; the swaps are
    resampled as units, though one item's swaps share its image), and the skipped swaps' count."""
    swaps = [s for r in results for s in r["swaps"]]
    return {"items": len(results), "swaps": len(swaps), "skipped": sum(len(r["skipped"]) for r in results),
            "answer_changed": _estimate([s["answer_changed"] for s in swaps]),
            "peak_moved": _estimate([s["peak_moved"] for s in swaps]),
            "map_cc": _estimate([s["map_cc"] for s in swaps])}


def _document(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results without their explanations, for JSON."""
    return [{**{k: v for k, v in r.items() if k != "explanation"},
             "swaps": [{k: v for k, v in s.items() if k != "explanation"} for s in r["swaps"]]} for r in results]


STYLE = """body{font-family:sans-serif;margin:2em} table{border-collapse:collapse} td,th{border:1px solid #ccc;
padding:2px 8px} figure{display:inline-block;margin:4px;width:220px;vertical-align:top} figure img{width:220px}
.bar{display:inline-block;width:160px;height:12px;background:#2ca02c} .bar span{display:block;height:12px;
background:#1f77b4} .pair{display:inline-block;border:1px solid #ddd;margin:6px;padding:4px;vertical-align:top}"""


def _bar(share: float | None) -> str:
    """The image share in blue against the prompt's in green (empty without a share)."""
    if share is None:
        return "no positive relevance"
    return f'<span class="bar"><span style="width:{share:.1%}"></span></span> {share:.1%}'


def _page(title: str, body: str) -> str:
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def _scale_note(method: str, same_scale: bool) -> str:
    if same_scale:
        return f"<p>Method <b>{html.escape(method)}</b> scores image and prompt tokens on one scale.</p>"
    return (f"<p>Method <b>{html.escape(method)}</b> attributes the image and the prompt separately (other "
            "paths or perturbations): read the shares with care, they do not compare like with like.</p>")


SHARE_TEXT = ("Image share: the positive relevance on the image tokens over that on the image and question tokens "
              "together (blue: image, green: prompt).")


def write_bias_report(explanation: Explanation, folder: str | Path, image: int = 0) -> list[Path]:
    """bias.html (the holistic map and share, each token's share) and bias.json in `folder`."""
    result = modality_shares(explanation)
    holistic = result["holistic"]
    rows = "".join(
        f"<tr><td>{t}</td><td>{html.escape(row['token'])}</td><td>{_bar(row['image_share'])}</td>"
        f"<td>{row['image_mass']:.4g}</td><td>{row['prompt_mass']:.4g}</td>"
        f"<td>{html.escape(row['top_prompt_word'] or '')}</td></tr>" for t, row in enumerate(result["tokens"]))
    body = f"""<h1>Image against prompt</h1>{_scale_note(result['method'], result['same_scale'])}
<p>Question: {html.escape(explanation.question)}<br>Answer: {html.escape(explanation.answer)}</p>
<figure><img src="{data_uri(explanation.to_png(image=image))}" alt="holistic map"><figcaption>holistic map</figcaption>
</figure><p>Holistic image share: {_bar(holistic['image_share'])}; the prompt word carrying the most relevance:
<b>{html.escape(holistic['top_prompt_word'] or 'none')}</b>.</p><p>{SHARE_TEXT}</p>
<table><tr><th>#</th><th>token</th><th>image share</th><th>image mass</th><th>prompt mass</th>
<th>top prompt word</th></tr>{rows}</table>"""
    return write_report(folder, "bias", _page(f"Bias: {explanation.answer}", body), result)


def write_batch_bias_report(out: str | Path, folder: str | Path, method: str = "glimpse") -> list[Path]:
    """bias.html (the mean image share over a batch's items, each item's share) and bias.json in `folder`."""
    result = batch_shares(out, method)
    estimate = result["image_share"]
    mean = "undefined (no item has positive relevance)" if estimate is None else (
        f"{estimate['mean']:.1%} [{estimate['low']:.1%}, {estimate['high']:.1%}] over {estimate['n']} items")
    ordered = sorted(result["items"], key=lambda i: -1.0 if i["image_share"] is None else i["image_share"])
    rows = "".join(
        f"<tr><td>{html.escape(i['id'])}</td><td>{html.escape(i['question'])}</td><td>{html.escape(i['answer'])}</td>"
        f"<td>{_bar(i['image_share'])}</td><td>{html.escape(i['top_prompt_word'] or '')}</td></tr>" for i in ordered)
    body = f"""<h1>Image against prompt over {len(result['items'])} items</h1>
{_scale_note(method, result['same_scale'])}<p>Mean holistic image share: <b>{mean}</b> (bootstrap 95% interval).</p>
<p>{SHARE_TEXT} Items from the lowest image share up.</p><table><tr><th>id</th><th>question</th><th>answer</th>
<th>image share</th><th>top prompt word</th></tr>{rows}</table>"""
    return write_report(folder, "bias", _page(f"Bias: {method}", body), result)


def summary_text(summary: dict[str, Any]) -> str:
    """`counterfactual_summary` in one line."""
    def shown(name: str, spec: str) -> str:
        estimate = summary[name]
        if estimate is None:
            return "none"
        return f"{estimate['mean']:{spec}} [{estimate['low']:{spec}}, {estimate['high']:{spec}}]"
    return (f"answers changed {shown('answer_changed', '.0%')}, peaks moved {shown('peak_moved', '.0%')}, mean map CC "
            f"{shown('map_cc', '.2f')} over {summary['swaps']} swap(s) of {summary['items']} item(s) "
            f"({summary['skipped']} skipped: word not in the question)")


def _number(value: float | None, text: str) -> str:
    return "n/a" if value is None else format(value, text)


def _swap_card(result: dict[str, Any], swap: dict[str, Any]) -> str:
    original, swapped = result["explanation"], swap["explanation"]
    figures = "".join(
        f'<figure><img src="{data_uri(overlay(e))}" alt="map: {html.escape(e.question)}"><figcaption>'
        f"{html.escape(e.question)}<br>answer: {html.escape(e.answer)}</figcaption></figure>"
        for e in (original, swapped))
    return (f'<div class="pair"><b>{html.escape(swap["word"])} &rarr; {html.escape(swap["replacement"])}</b><br>'
            f"{figures}<br>answer changed: <b>{'yes' if swap['answer_changed'] else 'no'}</b>; map CC "
            f"{swap['map_cc']:.2f}; peak moved: {'yes' if swap['peak_moved'] else 'no'}; image share "
            f"{_number(result['image_share'], '.1%')} &rarr; {_number(swap['image_share'], '.1%')}; prompt-word score "
            f"of &ldquo;{html.escape(swap['word'])}&rdquo; in the original: {_number(swap['word_score'], '.3g')}</div>")


def _item_section(result: dict[str, Any]) -> str:
    name = f"{html.escape(result['id'])}: " if "id" in result else ""
    skipped = (f"<p>Skipped (word not in the question): {html.escape(', '.join(result['skipped']))}</p>"
               if result["skipped"] else "")
    return (f"<h2>{name}{html.escape(result['question'])}</h2><p>Answer: {html.escape(result['answer'])}</p>"
            f"{''.join(_swap_card(result, s) for s in result['swaps'])}{skipped}")


def write_counterfactual_report(results: Sequence[dict[str, Any]], folder: str | Path) -> list[Path]:
    """counterfactual.html (the summary, then per item and swap the two maps with their questions,
    answers and numbers) and counterfactual.json in `folder`."""
    summary = counterfactual_summary(results)
    method = results[0]["method"] if results else ""
    body = f"""<h1>Counterfactual prompts</h1><p>Method <b>{html.escape(method)}</b>: {html.escape(summary_text(summary))}
(bootstrap 95% intervals over the swaps).</p><p>An answer counts as changed when it differs from the original answer
with the same swap applied (an answer that only repeats the swapped word is unchanged). Map CC: Pearson's
correlation of the two holistic maps; peak: the highest-scoring image token; image share: as in the bias report.</p>
{''.join(_item_section(r) for r in results)}"""
    return write_report(folder, "counterfactual", _page("Counterfactual prompts", body),
                  {"summary": summary, "items": _document(results)})
