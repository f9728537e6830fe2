"""What one explanation cost: wall time and peak working memory, measured around the run.

On CUDA the peak comes from the caching allocator (`max_memory_allocated` above the memory in use
at the start); on the CPU from a thread that samples the process's resident set every 20
ms (Linux /proc; elsewhere the memory is not measured and says so), minus the resident
set at the start: the working memory of the run, not the model.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Every 20 ms: the peaks that matter (saved attention, reduced layers) live for whole backward passes, and
# sampling more often slows Python-bound small runs through the GIL (measured: 5 ms doubled a tiny explain).
SAMPLE_SECONDS = 0.02
STATM = "/proc/self/statm"


def resident_bytes() -> int:
    """The process's resident set now (Linux /proc)."""
    with open(STATM) as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _ResidentPeak:
    """Samples the resident set on a daemon thread until stopped; keeps the largest value."""

    def __init__(self) -> None:
        self.start = self.peak = resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, resident_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, resident_bytes()) - self.start


# What torch's allocators say when an allocation fails (CUDA raises OutOfMemoryError; the CPU a RuntimeError).
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(sign in str(exc) for sign in OUT_OF_MEMORY)


def available_memory(device: torch.device) -> int | None:
    """Bytes that could still be allocated: free CUDA memory, or the kernel's MemAvailable on the
    CPU (Linux); None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@contextmanager
def measured(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yields a dict that holds, on exit, `seconds`, `peak_memory_bytes` (None when not measurable
    here) and `memory_source` (how it was measured)."""
    cost: dict[str, Any] = {}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        in_use = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    sampler = _ResidentPeak() if not cuda and os.path.exists(STATM) else None
    start = time.perf_counter()
    try:
        yield cost
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            peak, source = torch.cuda.max_memory_allocated(device) - in_use, "cuda allocator peak above the start"
        elif sampler is not None:
            peak, source = sampler.stop(), "process resident set: sampled peak above the start"
        else:
            peak, source = None, "not measured on this platform"
        cost.update(seconds=round(time.perf_counter() - start, 3), peak_memory_bytes=peak, memory_source=source,
                    device=str(device))
