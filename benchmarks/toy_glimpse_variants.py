"""GLIMPSE options on a shapes-world model: pointing game and energy in mask of the holistic map, and pointing of
the answer word's token map (correct answers), over the type 1-3 questions of N held-out scenes. The first variant
generates the answer; the others explain the same answer.

    python benchmarks/toy_glimpse_variants.py [MODEL_FOLDER] [--n 200]
"""
import argparse

import numpy as np

import glimpse
from glimpse.eval import energy_in_mask, pointing_game
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED
from glimpse.toy.localisation import answer_word_token

VARIANTS = {"glimpse (defaults)": {}, "depth_scale=auto": {"depth_scale": "auto"},
            "exclude_sinks": {"exclude_sinks": True}, "layer_fraction=0.5": {"layer_fraction": 0.5},
            "token_weighting=confidence": {"token_weighting": "confidence"},
            "token_weighting=prompt": {"token_weighting": "prompt"},
            "token_weighting=uniform": {"token_weighting": "uniform"}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    model, processor = glimpse.load(args.model, device="cpu")
    scores = {k: [] for k in VARIANTS}
    samples = [s for s in world.make_dataset(args.n, HELDOUT_SEED) if s.qtype in (1, 2, 3)]
    for s in samples:
        answer = None
        for name, options in VARIANTS.items():
            e = glimpse.explain(model, processor, s.image, s.question, answer=answer, max_new_tokens=12, **options)
            answer = e.answer
            word = answer_word_token(s, e.answer_tokens) if answer == s.answer else None
            scores[name].append((pointing_game(e, s.mask), energy_in_mask(e, s.mask),
                                 np.nan if word is None else pointing_game(e, s.mask, token=word)))
    print(f"{len(samples)} type 1-3 questions of {args.n} held-out scenes (seed {HELDOUT_SEED}), "
          f"model {args.model or 'shipped'}")
    print(f"{'variant':<28}{'pointing':>10}{'energy':>10}{'answer-word pointing':>22}")
    for name, rows in scores.items():
        a = np.array(rows, dtype=float)
        print(f"{name:<28}{a[:, 0].mean():>10.3f}{a[:, 1].mean():>10.3f}{np.nanmean(a[:, 2]):>22.3f}")


if __name__ == "__main__":
    main()
