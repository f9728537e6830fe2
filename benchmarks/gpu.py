"""`benchmarks/exact.py` on CUDA: the model in bfloat16 (the method's maths stays float32), longer
sequences (up to 28 images, N ~ 16,000), memory from the CUDA allocator's peak. Writes
benchmarks/results/exact-gpu.json.

    python benchmarks/gpu.py [any exact.py option, e.g. --images 1 4 14 28]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from exact import main

if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device; on the CPU run benchmarks/exact.py")
    main(["--images", "1", "2", "4", "7", "14", "28", *sys.argv[1:]], device="cuda", dtype="bfloat16",
         full_matrix_images=7, out=Path(__file__).parent / "results" / "exact-gpu.json")
