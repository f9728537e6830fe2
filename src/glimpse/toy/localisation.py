"""Does the explanation point at the evidence? Held-out shapes-world scenes, where the pixels that
answer each question are known exactly.

For questions about one object (types 1-3): the pointing game (the highest-scoring image token
covers a pixel of the asked-about object) and the share of the map's mass on the object, for each
method, explaining the model's own greedy answer. Chance for the pointing game is the share of
image tokens that touch the object.
"""

from __future__ import annotations

import numpy as np

from ..eval import energy_in_mask, pointing_chance, pointing_game
from . import world

SINGLE_OBJECT_TYPES = (1, 2, 3)


def evaluate_localisation(model, processor, n: int, seed: int, methods: tuple[str, ...] = ("glimpse", "raw_attention")
                          ) -> dict:
    """Pointing game and energy in mask per method over the type 1-3 samples among `n` held-out ones."""
    import glimpse

    samples = [s for s in world.make_dataset(n, seed) if s.qtype in SINGLE_OBJECT_TYPES]
    scores: dict[str, dict[str, list[float]]] = {m: {"pointing": [], "energy": [], "correct": []} for m in methods}
    chance = []
    for sample in samples:
        answer = None
        for method in methods:
            # The first method generates the answer; the others explain that same answer.
            explanation = glimpse.explain(model, processor, sample.image, sample.question, answer=answer,
                                          method=method, max_new_tokens=12)
            answer = explanation.answer
            scores[method]["pointing"].append(float(pointing_game(explanation, sample.mask)))
            scores[method]["energy"].append(energy_in_mask(explanation, sample.mask))
            scores[method]["correct"].append(float(answer == sample.answer))
        chance.append(pointing_chance(explanation.layouts[0], sample.mask))
    summary = {m: {"pointing": float(np.mean(v["pointing"])), "energy": float(np.mean(v["energy"])),
                   "pointing_when_correct": _masked_mean(v["pointing"], v["correct"])}
               for m, v in scores.items()}
    return {"n_questions": len(samples), "seed": seed, "methods": summary,
            "chance_pointing": float(np.mean(chance)), "mask_share": float(np.mean([s.mask.mean() for s in samples]))}


def _masked_mean(values: list[float], keep: list[float]) -> float:
    chosen = [v for v, k in zip(values, keep) if k]
    return float(np.mean(chosen)) if chosen else float("nan")
