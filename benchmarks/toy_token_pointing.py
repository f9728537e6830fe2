"""Where GLIMPSE's holistic map loses the object: pointing game of the holistic map versus the map of the one
answer token that carries the answer (the colour of type 1, the shape of type 2, the first quadrant word of type 3),
for GLIMPSE and raw attention, on the type 1-3 questions of N held-out scenes, explaining the model's own answer.

    python benchmarks/toy_token_pointing.py [MODEL_FOLDER] [--n 200]
"""
import argparse

import numpy as np

import glimpse
from glimpse.eval import energy_in_mask, pointing_game
from glimpse.toy import world
from glimpse.toy.bench import HELDOUT_SEED


def evidence_token(sample: world.Sample, tokens: list[str]) -> int | None:
    """Index of the answer token that names the asked-for attribute (None when the model did not say it)."""
    obj = sample.objects[sample.target]
    word = {1: obj.color, 2: obj.shape, 3: obj.quadrant.split()[0]}[sample.qtype]
    hits = [i for i, t in enumerate(tokens) if t.strip() == word]
    return hits[-1] if hits else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    model, processor = glimpse.load(args.model, device="cpu")
    methods = ("glimpse", "raw_attention")
    rows = {m: [] for m in methods}
    samples = [s for s in world.make_dataset(args.n, HELDOUT_SEED) if s.qtype in (1, 2, 3)]
    for s in samples:
        answer = None
        for m in methods:
            e = glimpse.explain(model, processor, s.image, s.question, answer=answer, method=m, max_new_tokens=12)
            answer = e.answer
            k = evidence_token(s, e.answer_tokens) if answer == s.answer else None
            rows[m].append((pointing_game(e, s.mask), energy_in_mask(e, s.mask), answer == s.answer,
                            np.nan if k is None else pointing_game(e, s.mask, token=k),
                            np.nan if k is None else energy_in_mask(e, s.mask, token=k)))
    print(f"{len(samples)} type 1-3 questions of {args.n} held-out scenes (seed {HELDOUT_SEED}), model "
          f"{args.model or 'shipped'}")
    print("method         holistic: pointing energy | correct answers: holistic pointing | answer-word token: "
          "pointing energy")
    for m, r in rows.items():
        a = np.array(r, dtype=float)
        ok = a[:, 2] == 1
        print(f"{m:14s} {a[:, 0].mean():.3f} {a[:, 1].mean():.3f} | {a[ok, 0].mean():.3f} (n={ok.sum()}) | "
              f"{np.nanmean(a[:, 3]):.3f} {np.nanmean(a[:, 4]):.3f}")


if __name__ == "__main__":
    main()
