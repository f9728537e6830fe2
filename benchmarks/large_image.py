"""What a large photograph costs `glimpse explain` end to end (decode, explain, render, save): wall time
and the process's peak resident memory, one fresh process per size, the shipped model on the CPU.

The pictures are photograph-like (smooth colour fields, texture and JPEG compression): a JPEG of noise
would only measure the decoder. The maps are rendered at most `render.DISPLAY_SIDE` pixels a side
(the bound added for issue 16: before it, 8000 x 6000 took 83 s and 6.2 GB).

    python benchmarks/large_image.py                      # 1024 x 768, 4000 x 3000, 8000 x 6000
    python benchmarks/large_image.py --sizes 13000x13000
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

QUESTION = "what color is the circle?"


def photograph(width: int, height: int, path: Path) -> None:
    """Smooth random colour fields with fine texture, saved as a quality-90 JPEG."""
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height),
                                                                                     Image.BICUBIC)
    grain = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    grain = grain.resize((width, height), Image.NEAREST).filter(ImageFilter.GaussianBlur(2))
    Image.blend(coarse, grain, 0.25).save(path, quality=90)


# The command line, reporting its own peak resident memory (KiB on Linux) as it exits.
WITH_PEAK = ("import atexit, resource, sys; atexit.register(lambda: print('peak_kib', "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)); "
             "from glimpse.cli import main; sys.argv[0] = 'glimpse'; main()")


def measure(path: Path, out: Path) -> dict:
    """One `glimpse explain` in a process of its own: seconds and that process's peak resident memory."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WITH_PEAK, "explain", "-i", str(path), "-p", QUESTION,
                           "-o", str(out)], capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"glimpse explain failed on {path.name}: {done.stderr}")
    peak = int(done.stderr.rsplit("peak_kib", 1)[1])
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak / 1024, 1),
            "files": sorted(p.name for p in out.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024x768,4000x3000,8000x6000")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/large-image.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            path = Path(scratch) / f"photo-{size}.jpg"
            photograph(width, height, path)
            row = {"size": size, "megapixels": round(width * height / 1e6, 1), "jpeg_mib":
                   round(path.stat().st_size / 2**20, 1), **measure(path, Path(scratch) / f"out-{size}")}
            rows.append(row)
            print(f"{size:>12}  {row['megapixels']:6.1f} MP  {row['seconds']:7.2f} s  "
                  f"peak {row['peak_rss_mib']:8.1f} MiB", flush=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"command": "python " + " ".join(sys.argv), "machine": machine, "rows": rows},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
