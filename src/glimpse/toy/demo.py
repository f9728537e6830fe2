"""The demo: a shapes-world scene, the shipped model's answer, and its GLIMPSE explanation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..eval import energy_in_mask, pointing_game
from ..explanation import Explanation
from . import world
from .localisation import answer_word_token


@dataclass
class DemoResult:
    sample: world.Sample
    explanation: Explanation
    pointing: bool
    energy: float
    folder: Path
    answer_word: int | None = None  # the answer token naming the asked-for attribute (types 1-3, when said)
    word_pointing: bool = False
    word_energy: float = 0.0


def run_demo(folder: Path, seed: int = 0, model: str | None = None) -> DemoResult:
    """Draw scene `seed`, let the model answer its question, explain, and save everything to `folder`."""
    import glimpse

    sample = world.make_sample(seed)
    loaded = glimpse.load(model, device="cpu")
    explanation = glimpse.explain(loaded.model, loaded.processor, sample.image, sample.question, max_new_tokens=12)
    explanation.extra.update({"demo_seed": seed, "expected_answer": sample.answer})
    explanation.save(folder)
    result = DemoResult(sample, explanation, pointing_game(explanation, sample.mask),
                        energy_in_mask(explanation, sample.mask), folder)
    word = answer_word_token(sample, explanation.answer_tokens)
    if word is not None:
        explanation.to_png(folder / "answer-word.png", token=word)
        result.answer_word = word
        result.word_pointing = pointing_game(explanation, sample.mask, token=word)
        result.word_energy = energy_in_mask(explanation, sample.mask, token=word)
    return result
