"""Exact GLIMPSE against the floor and against a direct implementation: time, peak working memory
and agreement of the maps, over sequence lengths and over layer counts, in one run.

Model: the random LLaVA of `llava_model.py` (LLaVA-1.5 geometry, 576 image tokens per image, Llama 8 x 512
with 8 heads; `--layers` changes the depth), CPU, 2 threads, a 16-token answer; the sequence grows
with the number of images. Every job runs in a fresh process, which builds the model, reads its
resident memory, runs the job once and reports the process's peak resident memory minus that
baseline (the working memory). The timed jobs run `--repeat` times in turn (up to `--repeat-images`
images) and the table shows each one's median: run times on a shared machine drift (one explain at
N = 599 took 6.66, 9.89 and 6.76 s in turn, results/exact-cpu.json). Jobs:

  floor        the model's own attention (sdpa): one forward with gradients, one backward per answer token
  fast_floor   sdpa: one forward, one backward (of the summed answer logits)
  explain      glimpse.explain, exact GLIMPSE, path="auto" (what a user gets)
  blockwise    exact GLIMPSE, path="blockwise"      full_matrix  exact GLIMPSE, path="full_matrix"
  batched      blockwise with max_memory=8 GiB: several answer tokens per (vmap-batched) backward pass
  direct       benchmarks/direct.py: eager + output_attentions + retain_grad, full matrices
  fast         glimpse_fast (path="auto")

The full-matrix jobs hold layers x heads x N^2 floats: they (and batched) run up to `--full-matrix-images` images.

r is Pearson's correlation of the per-token image maps with the direct implementation's.

    python benchmarks/exact.py [--images 1 2 4 7 14] [--layers 4 8 16] [--out benchmarks/results/exact-cpu.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUESTION = "what is in the picture?"
WORDS = ["a", "red", "circle", "on", "the", "left", "of", "blue", "square"]
JOBS = ("floor", "fast_floor", "explain", "blockwise", "batched", "full_matrix", "direct", "fast")
# The jobs whose time ratios are targets (explain against floor, fast against fast_floor): run `--repeat` times.
REPEATED = ("floor", "fast_floor", "explain", "fast")
# The explain jobs' GLIMPSE options (batched: answer tokens share backward passes within 8 GiB).
JOB_OPTIONS = {"blockwise": {"path": "blockwise"}, "full_matrix": {"path": "full_matrix"},
               "batched": {"path": "blockwise", "max_memory": 8.0}}


def measure(job: str, images: int, layers: int, answer_tokens: int, maps: Path, device: str = "cpu",
            dtype: str = "float32") -> dict:
    """In this process: the job's sequence length, seconds and working memory; maps saved to `maps`.
    On CUDA the memory is the allocator's peak above what the model and inputs hold."""
    import torch
    from PIL import Image

    import glimpse
    import glimpse.methods.glimpse
    import glimpse.pipeline  # noqa: F401  (imported before the timer: glimpse imports its parts lazily)
    from direct import direct_glimpse
    from glimpse.resources import resident_bytes
    from llava_model import build

    torch.set_num_threads(2)
    model, processor = build(device, layers=layers, dtype=getattr(torch, dtype))
    model.set_attn_implementation("sdpa")
    pictures = [Image.new("RGB", (500, 375), (120, 80 + 10 * i, 40)) for i in range(images)]
    answer = " ".join((WORDS * 8)[:answer_tokens])
    adapter = glimpse.adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, images)
    answer_ids = adapter.answer_ids(text, answer)
    inputs = adapter.with_answer(adapter.encode(pictures, text), answer_ids)
    layout = adapter.layout(inputs, pictures, text, QUESTION, len(answer_ids))
    inputs = {k: v.to(device, getattr(torch, dtype)) if v.is_floating_point() else v.to(device)
              for k, v in inputs.items()}
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if cuda else resident_bytes()
    start = time.perf_counter()
    extra: dict = {}
    if job in ("floor", "fast_floor"):
        floor(model, inputs, answer_ids, summed=job == "fast_floor")
    elif job == "direct":
        result = direct_glimpse(model, inputs, list(layout.answer), list(layout.image_positions), list(layout.prompt))
        np.save(maps, result["token_visual"].float().cpu().numpy())
    else:
        options = JOB_OPTIONS.get(job, {})
        method = "glimpse_fast" if job == "fast" else "glimpse"
        explanation = glimpse.explain(model, processor, pictures, QUESTION, answer=answer, method=method, **options)
        np.save(maps, explanation.token_visual)
        extra["path"] = explanation.cost.get("attention_path")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"job": job, "images": images, "layers": layers, "length": int(inputs["input_ids"].shape[1]),
            "answer_tokens": len(answer_ids), "seconds": round(seconds, 2),
            "working_memory_mb": round((peak - baseline) / 2**20, 1), **extra}


def floor(model, inputs: dict, answer_ids: list[int], summed: bool) -> None:
    import torch

    from glimpse import progress

    kept = {}
    hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: kept.update(x=out.requires_grad_()))
    try:
        with torch.enable_grad():
            logits = model(**inputs, use_cache=False).logits[0]
            first = inputs["input_ids"].shape[1] - len(answer_ids)
            targets = [logits[first + t - 1, token] for t, token in enumerate(answer_ids)]
            if summed:
                torch.autograd.grad(torch.stack(targets).sum(), kept["x"])
            with progress.steps(0 if summed else len(targets), "floor: backward passes") as bar:  # as explain's
                for t, target in enumerate([] if summed else targets):
                    torch.autograd.grad(target, kept["x"], retain_graph=t < len(targets) - 1)
                    bar.update(1)
    finally:
        hook.remove()


def run_one(job: str, images: int, layers: int, args: argparse.Namespace, folder: Path) -> dict:
    maps = folder / f"{job}-{images}-{layers}.npy"
    # The job's stderr is this terminal's: its progress bars (backward passes, ...) show while it runs.
    done = subprocess.run([sys.executable, __file__, "--one", job, str(images), str(layers), str(maps),
                           "--answer-tokens", str(args.answer_tokens), "--device", args.device, "--dtype", args.dtype],
                          stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent)
    if done.returncode != 0 or not done.stdout.strip():
        return {"job": job, "images": images, "layers": layers,
                "error": f"the job's process ended with status {done.returncode} (its output is above)"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if "error" in row:
        return row
    direct = folder / f"direct-{images}-{layers}.npy"
    if maps.exists() and direct.exists() and job != "direct":
        row["r_direct"] = round(float(np.corrcoef(np.load(maps).ravel(), np.load(direct).ravel())[0, 1]), 6)
    return row


def medians(point: list[dict]) -> list[dict]:
    """One row per job of one sequence length and depth: a job run several times gets the median
    of its runs' seconds and working memory, the runs kept under "runs" (a failed run: its error)."""
    merged: dict[str, list[dict]] = {}
    for row in point:
        merged.setdefault(row["job"], []).append(row)
    out = []
    for runs in merged.values():
        failed = [row for row in runs if "error" in row]
        if failed or len(runs) == 1:
            out.append(failed[0] if failed else runs[0])
            continue
        out.append({**runs[0], "seconds": round(statistics.median(row["seconds"] for row in runs), 2),
                    "working_memory_mb": round(statistics.median(row["working_memory_mb"] for row in runs), 1),
                    "runs": [{"seconds": row["seconds"], "working_memory_mb": row["working_memory_mb"]} for row in runs]})
    return out


def show(row: dict, floors: dict) -> str:
    if "error" in row:
        return f"images={row['images']} layers={row['layers']} {row['job']:<11} failed: {row['error']}"
    base = floors.get(("fast_floor" if row["job"] == "fast" else "floor", row["images"], row["layers"]))
    ratio = f"{row['seconds'] / base['seconds']:5.2f}x" if base and row["job"] not in ("floor", "fast_floor") else "      "
    mem = f"{row['working_memory_mb'] / base['working_memory_mb']:5.2f}x" if base and ratio.strip() else "      "
    r = f"r={row['r_direct']:.6f}" if "r_direct" in row else ""
    path = f"({row['path']})" if row.get("path") else ""
    return (f"N={row['length']:>5} L={row['layers']:>2}  {row['job']:<11} {row['seconds']:>8.2f} s {ratio}  "
            f"{row['working_memory_mb']:>8.1f} MB {mem}  {r} {path}")


def exponent(rows: list[dict], job: str, layers: int) -> float | None:
    """The slope of log(working memory) against log(N) by least squares. "blockwise" counts the
    explain rows that took the block-wise path too (not batched or fast: other jobs)."""
    def counts(row: dict) -> bool:
        return row.get("job") == job or (job == "blockwise" and row.get("job") == "explain"
                                          and row.get("path") == "blockwise")
    points = [(row["length"], row["working_memory_mb"]) for row in rows
              if counts(row) and row.get("layers") == layers and "error" not in row]
    if len(points) < 2:
        return None
    x, y = (np.log([p[i] for p in points]) for i in (0, 1))
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def fitted(rows: list[dict]) -> dict[str, float | None]:
    fits = {job: exponent(rows, job, 8) for job in ("floor", "blockwise", "full_matrix", "direct")}
    print("memory ~ N^k, fitted k (8 layers): " + ", ".join(f"{job} {k}" for job, k in fits.items() if k is not None))
    return fits


def machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"{cpu_name() or platform.processor() or platform.machine()}, cpu, 2 threads"


def cpu_name() -> str | None:
    """The processor's model name (Linux /proc/cpuinfo), None where it cannot be read."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def main(argv: list[str] | None = None, device: str = "cpu", dtype: str = "float32", full_matrix_images: int = 4,
         out: Path | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 2, 4, 7, 14])
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default=dtype, help="the model's dtype (the method's maths is float32)")
    parser.add_argument("--full-matrix-images", type=int, default=full_matrix_images,
                        help="the most images the full-matrix jobs (direct, full_matrix) run with")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16], help="depths, at 2 images")
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--repeat", type=int, default=3,
                        help=f"runs of each timed job ({', '.join(REPEATED)}), in turn; the table shows the medians")
    parser.add_argument("--repeat-images", type=int, default=4, help="repeat only up to this many images")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--fit", type=Path, nargs="+", help="only print the memory exponents of these saved runs, "
                                                           "their rows taken together")
    parser.add_argument("--one", nargs=4, metavar=("JOB", "IMAGES", "LAYERS", "MAPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        job, images, layers, maps = args.one
        try:
            row = measure(job, int(images), int(layers), args.answer_tokens, Path(maps), args.device, args.dtype)
        except Exception as exc:  # a row saying why, as the table shows it
            row = {"job": job, "images": int(images), "layers": int(layers),
                   "error": f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"}
        print(json.dumps(row))
        return
    if args.fit:
        fitted([row for path in args.fit for row in json.loads(path.read_text())["rows"]])
        return
    plan = [(images, 8) for images in args.images] + [(2, layers) for layers in args.layers if layers != 8]
    rows, floors = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for images, layers in plan:
            point: list[dict] = []
            # The timed jobs again and again in turn, so that a slow spell of this shared machine falls on
            # all of them alike; direct first: the others' r is computed against its maps.
            for run in range(args.repeat if images <= args.repeat_images else 1):
                for job in sorted(args.jobs, key=lambda j: j != "direct"):
                    if run and job not in REPEATED:
                        continue
                    if job in ("direct", "full_matrix", "batched") and images > args.full_matrix_images:
                        continue
                    if layers != 8 and job not in ("floor", "explain"):
                        continue
                    if job == "blockwise" and point[-1].get("path") == "blockwise":
                        continue  # explain (path="auto", just run) was block-wise already
                    point.append(run_one(job, images, layers, args, Path(folder)))
            for row in medians(point):
                rows.append(row)
                if row["job"] in ("floor", "fast_floor") and "error" not in row:
                    floors[(row["job"], images, layers)] = row
                print(show(row, floors), flush=True)
    fits = fitted(rows)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(args.device), "dtype": args.dtype,
                                        "command": " ".join(["python", *sys.argv]),
                                        "rows": rows, "memory_exponent": fits}, indent=1))


if __name__ == "__main__":
    main()
