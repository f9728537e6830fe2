"""Exact-match accuracy of a toy model on held-out shapes-world scenes, and the bench's text output.

The held-out set is ``world.make_dataset(n, HELDOUT_SEED)``: sample ``i`` comes from ``default_rng([HELDOUT_SEED, i])``.
Training draws its data from ``default_rng([train.TRAIN_TAG, seed, stage, step, b])`` (five entries, first one
``TRAIN_TAG``), a different seed sequence, so no training scene is ever a benchmark scene.

    glimpse toy bench [--model FOLDER] [--n 200] [--n-localisation N // 5]
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import OptionError
from . import model as toy_model
from . import world

HELDOUT_SEED = 424_242


@torch.no_grad()
def generate_answers(model, processor, samples: list[world.Sample], batch_size: int = 50,
                     progress: Callable[[int], None] | None = None) -> list[str]:
    """The model's greedy answer (decoded, stripped) to each sample's question, in batches; `progress`, if given,
    is called after each batch with the number of samples answered so far."""
    model.eval()
    processor.tokenizer.padding_side = "left"  # batched generation needs the prompts flush right
    answers = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        inputs = processor(images=[s.image for s in chunk], text=[toy_model.prompt(processor, s.question) for s in chunk],
                           padding=True, return_tensors="pt")
        out = model.generate(**inputs, do_sample=False)
        decoded = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        answers += [a.strip() for a in decoded]
        if progress is not None:
            progress(len(answers))
    return answers


def evaluate_accuracy(model, processor, n: int = 1000, seed: int = HELDOUT_SEED, batch_size: int = 50,
                      progress: Callable[[int], None] | None = None) -> dict:
    """Greedy-decode answers for ``n`` held-out samples; return overall and per-type exact-match accuracy.
    `progress`, if given, is called after each batch with the number of samples answered so far."""
    samples = world.make_dataset(n, seed)
    hits: dict[int, list[bool]] = {q: [] for q in world.QTYPES}
    for s, a in zip(samples, generate_answers(model, processor, samples, batch_size, progress)):
        hits[s.qtype].append(a == s.answer)
    per_type = {q: sum(h) / len(h) for q, h in hits.items() if h}
    return {"n": n, "seed": seed, "overall": sum(sum(h) for h in hits.values()) / n,
            "per_type": per_type, "count_per_type": {q: len(h) for q, h in hits.items()}}


def localisation_scenes(n: int, asked: int | None = None) -> int:
    """Localisation scenes of a bench of `n` accuracy scenes: `asked`, or n // 5, so that the cost follows
    `n` and n = 1000 keeps the 200 scenes of the documented figures."""
    return n // 5 if asked is None else asked


def parse_variants(spec: str) -> dict[str, dict[str, Any]]:
    """Comma-separated METHOD or METHOD:KEY=VALUE[:KEY=VALUE...] entries as keyword arguments of
    `glimpse.explain` per entry; every name and option is checked now, before anything slow."""
    from ..methods import get_method, parse_variant

    variants = {}
    for entry in (part.strip() for part in spec.split(",") if part.strip()):
        name, options = parse_variant(entry)
        get_method(name, **options)
        variants[entry] = {"method": name, **options}
    if not variants:
        raise OptionError("no method named: give at least one, e.g. glimpse")
    return variants


def accuracy_lines(accuracy: dict) -> list[str]:
    lines = [f"exact-match accuracy on {accuracy['n']} held-out scenes (seed {accuracy['seed']}): "
             f"{accuracy['overall']:.1%}"]
    for qtype, value in sorted(accuracy["per_type"].items()):
        lines.append(f"  type {qtype}: {value:.1%} (n={accuracy['count_per_type'][qtype]})")
    return lines


def localisation_lines(result: dict, n_scenes: int) -> list[str]:
    """The localisation tables of `evaluate_localisation`'s result, as printed by `glimpse toy bench`."""
    methods = result["methods"]
    width = max(16, 2 + max(map(len, methods)))
    lines = [f"localisation on {result['n_questions']} type 1-3 questions of {n_scenes} scenes "
             f"(explaining the model's own answers; {result['n_correct']} answered correctly):",
             f"  {'':<{width}}{'holistic map':^40}{'answer-word token map (correct)':^34}",
             f"  {'method':<{width}}{'pointing':>10}{'pointing|correct':>18}{'energy':>12}{'pointing':>16}{'energy':>12}"]
    lines += [f"  {name:<{width}}{row['pointing']:>10.1%}{row['pointing_when_correct']:>18.1%}{row['energy']:>12.1%}"
              f"{row['answer_word_pointing']:>16.1%}{row['answer_word_energy']:>12.1%}" for name, row in methods.items()]
    lines.append(f"  chance: pointing {result['chance_pointing']:.1%}, "
                 f"energy {result['mask_share']:.1%} (the object's share of the image)")
    lines.append("holistic-map pointing by question type (1 colour, 2 shape, 3 location):")
    lines.append(f"  {'method':<{width}}" + "".join(f"{f'type {q} (n={n})':>16}" for q, n in result["n_by_type"].items()))
    lines += [f"  {name:<{width}}" + "".join(f"{v:>16.1%}" for v in row["pointing_by_type"].values())
              for name, row in methods.items()]
    return lines
