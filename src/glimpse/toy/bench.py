"""Exact-match accuracy of a toy model on held-out shapes-world scenes.

The held-out set is ``world.make_dataset(n, HELDOUT_SEED)``: sample ``i`` comes from ``default_rng([HELDOUT_SEED, i])``.
Training draws its data from ``default_rng([train.TRAIN_TAG, seed, stage, step, b])`` (five entries, first one
``TRAIN_TAG``), a different seed sequence, so no training scene is ever a benchmark scene.

    python -m glimpse.toy.bench [MODEL_FOLDER] [--n 1000]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from glimpse.toy import model as toy_model
from glimpse.toy import world

HELDOUT_SEED = 424_242


@torch.no_grad()
def generate_answers(model, processor, samples: list[world.Sample], batch_size: int = 50) -> list[str]:
    """The model's greedy answer (decoded, stripped) to each sample's question, in batches."""
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
    return answers


def evaluate_accuracy(model, processor, n: int = 1000, seed: int = HELDOUT_SEED, batch_size: int = 50) -> dict:
    """Greedy-decode answers for ``n`` held-out samples; return overall and per-type exact-match accuracy."""
    samples = world.make_dataset(n, seed)
    hits: dict[int, list[bool]] = {q: [] for q in world.QTYPES}
    for s, a in zip(samples, generate_answers(model, processor, samples, batch_size)):
        hits[s.qtype].append(a == s.answer)
    per_type = {q: sum(h) / len(h) for q, h in hits.items() if h}
    return {"n": n, "seed": seed, "overall": sum(sum(h) for h in hits.values()) / n,
            "per_type": per_type, "count_per_type": {q: len(h) for q, h in hits.items()}}


def main(argv: list[str] | None = None) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    parser = argparse.ArgumentParser(description="held-out exact-match accuracy of a toy model folder")
    parser.add_argument("folder", nargs="?", default=str(toy_model.default_model_path()))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=HELDOUT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    processor = AutoProcessor.from_pretrained(args.folder)
    model = AutoModelForImageTextToText.from_pretrained(args.folder)
    t0 = time.monotonic()
    result = evaluate_accuracy(model, processor, n=args.n, seed=args.seed)
    result["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
