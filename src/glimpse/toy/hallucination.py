"""Does the grounding score tell hallucinated answers from grounded ones? Held-out shapes-world
scenes asked "what color is the {shape}?", once about a shape in the scene (the colour word of the
answer is grounded) and once about a shape absent from it (the model still names a colour: that
word is hallucinated). The colour token's relative relevance (`analysis.hallucination`) ranks
them; the AUROC (grounded above hallucinated) comes with a bootstrap 95% interval."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..analysis.hallucination import grounding
from ..eval.stats import auroc, bootstrap_auroc
from . import world


def questions(n: int, seed: int) -> list[tuple[Any, str, bool]]:
    """(image, question, grounded) pairs: for each of `n` held-out scenes with a unique shape, a
    question about it and one about a shape the scene does not have."""
    pairs = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = world.make_scene(rng)
        present = [o.shape for o in scene.objects if [p.shape for p in scene.objects].count(o.shape) == 1]
        absent = [s for s in world.SHAPES if s not in {o.shape for o in scene.objects}]
        if not present or not absent:
            continue
        pairs.append((scene.image, f"what color is the {present[int(rng.integers(len(present)))]}?", True))
        pairs.append((scene.image, f"what color is the {absent[int(rng.integers(len(absent)))]}?", False))
    return pairs


def validate(model: Any, processor: Any, n: int, seed: int, method: str = "glimpse",
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """The grounding scores of the colour words and their AUROC over `n` held-out scenes;
    `progress(explained, questions)` after each question."""
    import glimpse

    scores = {True: [], False: []}
    skipped = 0
    pairs = questions(n, seed)
    for done, (image, question, grounded) in enumerate(pairs, 1):
        explanation = glimpse.explain(model, processor, image, question, method=method, max_new_tokens=12)
        colour = [t for t, token in enumerate(explanation.answer_tokens) if token.strip() in world.COLORS]
        if colour:
            scores[grounded].append(grounding(explanation)["tokens"][colour[-1]]["relative_relevance"])
        else:
            skipped += 1  # the answer names no colour
        if progress is not None:
            progress(done, len(pairs))
    estimate = bootstrap_auroc(np.array(scores[True]), np.array(scores[False]))
    return {"method": method, "scenes": n, "seed": seed, "grounded": len(scores[True]),
            "hallucinated": len(scores[False]), "no_colour_named": skipped, "auroc": auroc(scores[True], scores[False]),
            "low": estimate.low, "high": estimate.high, "scores": {"grounded": scores[True], "hallucinated": scores[False]}}
