"""GPU smoke test: every tiny family explained on CUDA in bfloat16 agrees with itself in float32 on the CPU.

Each family with a builder in tiny_models.py / tiny_families_*.py is built twice from the same seed (identical
weights), explains the same given answer about the same non-square image, once as built (float32, CPU) and once
moved to the device in the test's dtype. The explained answer tokens must be the same and the holistic visual
maps must correlate (Pearson r >= 0.9; on the CPU in bfloat16 every family measured r >= 0.99). The CUDA
parametrisation is skipped without a GPU; the comparison itself also runs on the CPU (float32 against
bfloat16) for two families, so its logic is exercised everywhere.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import glimpse
import tiny_families_gemma
import tiny_families_qwen
import tiny_families_tiles
from tiny_models import build_tiny_llava, rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

QUESTION = "what color is the object?"
ANSWER = " a red circle"
MIN_PEARSON = 0.9
Builder = Callable[[], tuple[Any, Any]]


def tiny_families() -> dict[str, Builder]:
    """Family name -> builder of (model, processor), seed 0, float32 on the CPU."""
    builders: dict[str, Builder] = {"llava": partial(build_tiny_llava, seed=0)}
    for module in (tiny_families_tiles, tiny_families_qwen, tiny_families_gemma):
        builders.update({family: partial(module.build, family, 0) for family in module.FAMILIES})
    if Path(__file__).with_name("tiny_families_mllama.py").exists():  # one family per module, no family argument
        import tiny_families_mllama

        builders["mllama"] = partial(tiny_families_mllama.build, 0)
    return builders


FAMILIES = tiny_families()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel())[0, 1])


def explain(model: Any, processor: Any):
    return glimpse.explain(model, processor, rand_image(120, 60, seed=7), QUESTION, answer=ANSWER)


def assert_agrees(got, expected) -> None:
    """Same answer tokens, layouts and layers; a finite, non-zero visual map correlated with the expected one."""
    assert got.answer_token_ids == expected.answer_token_ids
    assert got.layouts == expected.layouts and got.layers == expected.layers
    assert np.isfinite(got.visual).all() and np.abs(got.visual).max() > 0
    r = pearson(got.visual, expected.visual)
    assert r >= MIN_PEARSON, f"visual map Pearson r = {r:.4f} against float32 on the CPU"


def check_matches_float32_cpu(family: str, device: str, dtype: torch.dtype) -> None:
    model, processor = FAMILIES[family]()
    expected = explain(model, processor)  # as built: float32 on the CPU
    model.to(device=device, dtype=dtype)
    assert_agrees(explain(model, processor), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bfloat16_on_gpu_matches_float32_on_cpu(family):
    check_matches_float32_cpu(family, "cuda", torch.bfloat16)


@pytest.mark.parametrize("family", ["qwen2_vl", "paligemma"])
def test_bfloat16_on_cpu_matches_float32(family):
    check_matches_float32_cpu(family, "cpu", torch.bfloat16)


def test_comparison_notices_another_model():
    """Not vacuous: the same family with other weights (seed 5) fails the comparison."""
    expected = explain(*FAMILIES["paligemma"]())
    with pytest.raises(AssertionError, match="Pearson"):
        assert_agrees(explain(*tiny_families_gemma.build("paligemma", 5)), expected)
