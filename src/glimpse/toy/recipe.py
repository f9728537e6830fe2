"""The shapes-world model's recipe as data: its dimensions and its training settings, with their
defaults (the shipped model's). Free of torch, so the command line can list every setting as a flag
without importing the training code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Dims:
    """Model widths/depths. The defaults are the shipped model; tests use tiny ones."""
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_width: int = 256
    text_layers: int = 4  # with 3 the location question stalls at 80% (docs/toy.md, "Why three layers miss location")
    text_heads: int = 16
    text_mlp: int = 768


@dataclass
class TrainConfig:
    dims: Dims = field(default_factory=Dims)
    dense_steps: int = 2200
    answer_steps: int = 2200
    dense_batch: int = 32
    batch: int = 32
    turns: int = 4  # questions per image in the answer stage: more answer signal per (costly) image forward
    dense_lr: float = 2e-3
    lr: float = 1e-3  # projector + language model (fresh)
    vision_lr: float = 5e-4  # tower + dense head in the answer stage
    aux_weight: float = 0.5  # dense loss kept during the answer stage (unused with freeze_tower)
    freeze_tower: bool = True  # answer stage: tower (and dense head) fixed; no tower backward, no aux loss
    init_tower: str = ""  # model folder whose vision tower replaces the fresh one (to iterate on the LM side)
    init_model: str = ""  # model folder whose weights start the whole model (deeper language model: see grow)
    pooled_weight: float = 1.0
    warmup: int = 50
    weight_decay: float = 0.01
    bf16: bool = True
    ckpt_every_s: float = 180.0
    # Compute threads per stage, plus ``workers`` data processes. The dense stage is data-bound (0.51 s/step with 1
    # thread, 0.44 with 2) and its tower backward is not bitwise the same across thread counts, so it keeps 1. The
    # frozen-tower answer stage gives bitwise the same weights with 1 and 2 threads (measured over 40 full-size
    # steps; tested) and runs 1.56x faster with 2 (1.40 vs 2.18 s/step on an idle machine, 3 language layers). Two
    # threads slow down badly when another process takes a core: leave the machine to the run.
    dense_threads: int = 1
    answer_threads: int = 2
    workers: int = 1


def knobs() -> dict[str, Any]:
    """Every recipe setting with its default: TrainConfig's fields and the model's Dims (the CLI's flags)."""
    defaults = TrainConfig()
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "dims"}
    values.update({f.name: getattr(defaults.dims, f.name) for f in dataclasses.fields(Dims)})
    return values


def config_from(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from `knobs()`-named values (missing ones keep their defaults)."""
    dims = {f.name for f in dataclasses.fields(Dims)}
    return TrainConfig(dims=Dims(**{k: v for k, v in values.items() if k in dims}),
                       **{k: v for k, v in values.items() if k not in dims})
