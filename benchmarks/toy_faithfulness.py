"""Which answer tokens' maps are faithful, and which token weighting puts GLIMPSE's holistic map on them?

On the type 1-3 questions (one object) of N shapes-world scenes that the model answers right, with GLIMPSE:
- per answer token, the deletion curve of that token's own map, scored by that token's log-probability,
  against random orders: the gain (random AUC minus the map's AUC; > 0: deleting the map's cells first
  hurts the token more than deleting random cells), for the answer word (the token naming the asked-for
  attribute) and for the other tokens;
- per token weighting (full = the paper's crossed weighting, confidence, prompt, uniform): the weight the
  holistic map gives the answer word, the holistic map's deletion and insertion gains (scored by the whole
  answer's log-likelihood), and its pointing game.
Intervals: bootstrap 95% over the questions. Baseline: the image's mean colour (docs/evaluation.md: the blur
baseline keeps the shapes world's answers).

    python benchmarks/toy_faithfulness.py --n 60 --seed 7            # a development set
    python benchmarks/toy_faithfulness.py --n 60 --seed 424242       # the held-out scenes
"""
import argparse
import json

import numpy as np

import glimpse
from glimpse import progress
from glimpse.eval import pointing_game
from glimpse.eval.faithfulness import faithfulness_curve
from glimpse.eval.stats import bootstrap_mean, paired_bootstrap
from glimpse.toy.localisation import answer_word_token, single_object_samples

WEIGHTINGS = ("full", "confidence", "prompt", "uniform")
CURVE = {"baseline": "mean", "step": 0.1, "random_orders": 3}


def gain(model, processor, explanation, kind, token=None) -> float:
    curve = faithfulness_curve(model, processor, explanation, kind, token=token, **CURVE)
    return curve.random_auc - curve.auc if kind == "deletion" else curve.auc - curve.random_auc


def study(model, processor, n: int, seed: int) -> dict:
    rows = []
    samples = single_object_samples(n, seed)
    with progress.steps(len(samples), "questions") as bar:
        for sample in samples:
            study_one(model, processor, sample, rows)
            bar.update(1)
    return {"n_scenes": n, "seed": seed, "curve": CURVE, "rows": rows}


def study_one(model, processor, sample, rows: list) -> None:
    """One question's row (appended to `rows`, and printed), where the model answers it right."""
    base = glimpse.explain(model, processor, sample.image, sample.question)
    word = answer_word_token(sample, base.answer_tokens) if base.answer == sample.answer else None
    if word is None:
        return
    tokens = [gain(model, processor, base, "deletion", t) for t in range(len(base.answer_tokens))]
    row = {"question": sample.question, "answer": base.answer, "word": word, "token_deletion_gain": tokens}
    for weighting in WEIGHTINGS:
        e = base if weighting == "full" else glimpse.explain(model, processor, sample.image, sample.question,
                                                             answer=base.answer, token_weighting=weighting)
        row[weighting] = {"word_weight": float(e.token_weights[word]),
                          "deletion_gain": gain(model, processor, e, "deletion"),
                          "insertion_gain": gain(model, processor, e, "insertion"),
                          "pointing": float(pointing_game(e, sample.mask)),
                          "weights": [float(w) for w in e.token_weights]}
    rows.append(row)
    print(f"{len(rows):3d} {sample.question!r}: word gain {tokens[word]:+.3f}, others "
          f"{np.mean([g for t, g in enumerate(tokens) if t != word]):+.3f}", flush=True)


def summary(result: dict) -> list[str]:
    rows = result["rows"]
    word = np.array([r["token_deletion_gain"][r["word"]] for r in rows])
    others = np.array([np.mean([g for t, g in enumerate(r["token_deletion_gain"]) if t != r["word"]]) for r in rows])
    lines = [f"{len(rows)} correctly answered type 1-3 questions of {result['n_scenes']} scenes (seed {result['seed']}); "
             f"curves: {json.dumps(result['curve'])}; bootstrap 95% intervals over the questions", "",
             "Per-token deletion gain (random AUC - map AUC of the token's own map, scored by its log-probability):",
             f"  answer word   {bootstrap_mean(word).text()}",
             f"  other tokens  {bootstrap_mean(others).text()}  (their mean per question; paired p="
             f"{paired_bootstrap(word, others):.3g})", "",
             "| token weighting | weight on the answer word | holistic deletion gain | holistic insertion gain | "
             "pointing game |", "|---|---|---|---|---|"]
    full = {key: np.array([r["full"][key] for r in rows]) for key in ("deletion_gain", "insertion_gain", "pointing")}
    for weighting in WEIGHTINGS:
        cells = [bootstrap_mean(np.array([r[weighting]["word_weight"] for r in rows])).text()]
        for key in ("deletion_gain", "insertion_gain", "pointing"):
            values = np.array([r[weighting][key] for r in rows])
            p = "" if weighting == "full" else f" (p={paired_bootstrap(values, full[key]):.3g})"
            cells.append(bootstrap_mean(values).text() + p)
        lines.append(f"| {weighting} | " + " | ".join(cells) + " |")
    lines += ["", "p: paired bootstrap against the full (paper's) weighting."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None, help="also write every question's numbers here")
    args = parser.parse_args()
    loaded = glimpse.load(None, device="cpu")
    result = study(loaded.model, loaded.processor, args.n, args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle)
    print("\n".join(summary(result)))


if __name__ == "__main__":
    main()
