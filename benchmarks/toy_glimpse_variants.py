"""GLIMPSE options on a shapes-world model: pointing game and energy in mask of the holistic map, and pointing of
the answer word's token map (correct answers), over the type 1-3 questions of N held-out scenes. The first variant
generates the answer; the others explain the same answer.

    python benchmarks/toy_glimpse_variants.py [MODEL_FOLDER] [--n 200]
"""
import argparse

import glimpse
from glimpse.toy.bench import HELDOUT_SEED
from glimpse.toy.localisation import evaluate_localisation

OPTIONS = {"glimpse (defaults)": {}, "depth_scale=auto": {"depth_scale": "auto"},
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
    variants = {name: {"method": "glimpse", **options} for name, options in OPTIONS.items()}
    result = evaluate_localisation(model, processor, args.n, HELDOUT_SEED, variants=variants)
    print(f"{result['n_questions']} type 1-3 questions of {args.n} held-out scenes (seed {HELDOUT_SEED}), "
          f"model {args.model or 'shipped'}")
    print(f"{'variant':<28}{'pointing':>10}{'energy':>10}{'answer-word pointing':>22}")
    for name, row in result["methods"].items():
        print(f"{name:<28}{row['pointing']:>10.3f}{row['energy']:>10.3f}{row['answer_word_pointing']:>22.3f}")


if __name__ == "__main__":
    main()
