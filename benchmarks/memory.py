"""Peak working memory of exact GLIMPSE against the sequence length, next to the floor.

Each measurement runs in a fresh process: it builds the random LLaVA of `speed.py` (LLaVA-1.5 geometry,
576 image tokens per image; Llama 8 x 512), reads its resident memory, runs the job once, and reports
the peak resident memory minus that baseline (`ru_maxrss`: the process's peak). Sequence length grows
with the number of images in the prompt. Jobs: "floor" (the model's own sdpa attention, one forward
with gradients, one backward per answer token) and "explain" (`glimpse.explain`, exact GLIMPSE).

    python benchmarks/memory.py [--images 1 2 4] [--answer-tokens 8] [--out benchmarks/results/memory-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "what is in the picture?"
ANSWER = "a red circle on the left of blue square and a red circle"


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def measure(job: str, images: int, answer_tokens: int) -> dict:
    """In this process: the job's sequence length, seconds and peak working memory (bytes)."""
    import torch
    from PIL import Image

    import glimpse
    from speed import build

    torch.set_num_threads(2)
    model, processor = build("cpu")
    model.set_attn_implementation("sdpa")
    pictures = [Image.new("RGB", (500, 375), (120, 80 + 20 * i, 40)) for i in range(images)]
    adapter = glimpse.adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, images)
    answer_ids = adapter.answer_ids(text, ANSWER)[:answer_tokens]
    inputs = adapter.with_answer(adapter.encode(pictures, text), answer_ids)
    length = int(inputs["input_ids"].shape[1])
    baseline = rss_bytes()
    start = time.perf_counter()
    if job == "floor":
        embeds = {}
        hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: embeds.update(x=out.requires_grad_()))
        with torch.enable_grad():
            logits = model(**inputs, use_cache=False).logits[0]
            first = length - len(answer_ids)
            for t, token in enumerate(answer_ids):
                torch.autograd.grad(logits[first + t - 1, token], embeds["x"], retain_graph=t < len(answer_ids) - 1)
        hook.remove()
    else:
        glimpse.explain(model, processor, pictures, QUESTION, answer=processor.tokenizer.decode(answer_ids),
                        max_answer_tokens=answer_tokens)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"job": job, "images": images, "length": length, "answer_tokens": len(answer_ids),
            "seconds": round(seconds, 2), "working_memory_mb": round((peak - baseline) / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--jobs", nargs="+", default=["floor", "explain"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", nargs=2, metavar=("JOB", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.answer_tokens)))
        return
    rows = []
    for images in args.images:
        for job in args.jobs:
            done = subprocess.run([sys.executable, __file__, "--one", job, str(images), "--answer-tokens",
                                   str(args.answer_tokens)], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).parent)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"N={row['length']:>5}  {row['job']:<8} {row['seconds']:>7.2f} s  {row['working_memory_mb']:>8.1f} MB",
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps({"machine": "cpu, 2 threads", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
