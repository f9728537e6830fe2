"""Does the explanation point at the evidence? Held-out shapes-world scenes, where the pixels that
answer each question are known exactly.

For questions about one object (types 1-3), explaining the model's own greedy answer, per method:
the pointing game (the highest-scoring image token covers a pixel of the asked-about object; also per question
type) and the share of the map's mass on the object, for the holistic map; and the same two for the map of the one
answer token that names the asked-for attribute (the colour of type 1, the shape of type 2, the first
quadrant word of type 3), on correctly answered questions. Chance for the pointing game is the share
of image tokens that touch the object.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..eval import energy_in_mask, pointing_chance, pointing_game
from . import world

SINGLE_OBJECT_TYPES = (1, 2, 3)


def answer_word_token(sample: world.Sample, tokens: list[str]) -> int | None:
    """Index of the answer token naming the asked-for attribute, or None when the answer does not name it or the
    question is not about one object (counting)."""
    if sample.qtype not in SINGLE_OBJECT_TYPES:
        return None
    obj = sample.objects[sample.target]
    word = {1: obj.color, 2: obj.shape, 3: obj.quadrant.split()[0]}[sample.qtype]
    hits = [i for i, token in enumerate(tokens) if token.strip() == word]
    return hits[-1] if hits else None


def single_object_samples(n: int, seed: int) -> list[world.Sample]:
    """The samples that `evaluate_localisation` explains: those of types 1-3 among the `n` held-out ones."""
    return [s for s in world.make_dataset(n, seed) if s.qtype in SINGLE_OBJECT_TYPES]


def evaluate_localisation(model, processor, n: int, seed: int, methods: tuple[str, ...] = ("glimpse", "raw_attention"),
                          variants: dict[str, dict] | None = None,
                          progress: Callable[[int], None] | None = None) -> dict:
    """Pointing game and energy in mask per method over the type 1-3 samples among `n` held-out ones.

    `variants` (name -> keyword arguments of `glimpse.explain`, e.g. `{"method": "glimpse", "layer_fraction": 0.5}`)
    replaces `methods` to compare options of one method. `progress`, if given, is called after each explanation
    with the number done so far, out of questions x methods."""
    import glimpse

    runs = variants if variants is not None else {m: {"method": m} for m in methods}
    samples = single_object_samples(n, seed)
    done = 0
    keys = ("pointing", "energy", "correct", "word_pointing", "word_energy")
    scores: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in runs}
    chance = []
    for sample in samples:
        answer = None
        for name, options in runs.items():
            # The first run generates the answer; the others explain that same answer.
            explanation = glimpse.explain(model, processor, sample.image, sample.question, answer=answer,
                                          max_new_tokens=12, **options)
            answer = explanation.answer
            row = scores[name]
            row["pointing"].append(float(pointing_game(explanation, sample.mask)))
            row["energy"].append(energy_in_mask(explanation, sample.mask))
            row["correct"].append(float(answer == sample.answer))
            word = answer_word_token(sample, explanation.answer_tokens) if answer == sample.answer else None
            row["word_pointing"].append(np.nan if word is None else float(pointing_game(explanation, sample.mask,
                                                                                         token=word)))
            row["word_energy"].append(np.nan if word is None else energy_in_mask(explanation, sample.mask, token=word))
            done += 1
            if progress is not None:
                progress(done)
        chance.append(pointing_chance(explanation.layouts[0], sample.mask))
    qtypes = [s.qtype for s in samples]
    by_type = {q: qtypes.count(q) for q in SINGLE_OBJECT_TYPES if q in qtypes}
    summary = {m: {"pointing": float(np.mean(v["pointing"])), "energy": float(np.mean(v["energy"])),
                   "pointing_by_type": {q: _masked_mean(v["pointing"], [t == q for t in qtypes]) for q in by_type},
                   "pointing_when_correct": _masked_mean(v["pointing"], v["correct"]),
                   "answer_word_pointing": _nanmean(v["word_pointing"]),
                   "answer_word_energy": _nanmean(v["word_energy"])}
               for m, v in scores.items()}
    return {"n_questions": len(samples), "n_by_type": by_type,
            "n_correct": int(sum(next(iter(scores.values()))["correct"])), "seed": seed,
            "methods": summary, "chance_pointing": float(np.mean(chance)),
            "mask_share": float(np.mean([s.mask.mean() for s in samples]))}


def _masked_mean(values: list[float], keep: list[float]) -> float:
    chosen = [v for v, k in zip(values, keep) if k]
    return float(np.mean(chosen)) if chosen else float("nan")


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")
