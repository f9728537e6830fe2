"""Evaluation of explanations. Here: the metrics of a map (localisation against evidence masks and
boxes, agreement with human fixations). Submodules: `faithfulness` (deletion and insertion curves
through the model), `stats` (bootstrap intervals, the paired test), `evaluate` (a dataset's
table of methods, on the batch runner)."""

from .metrics import (
    auc_borji,
    auc_judd,
    box_mask,
    cc,
    energy_in_mask,
    fixations_from_map,
    kl_div,
    nss,
    pointing_chance,
    pointing_game,
    prompt_cc,
    prompt_spearman,
    shuffled_auc,
    sim,
    token_cells,
)

__all__ = ["auc_borji", "auc_judd", "box_mask", "cc", "energy_in_mask", "fixations_from_map", "kl_div", "nss",
           "pointing_chance", "pointing_game", "prompt_cc", "prompt_spearman", "shuffled_auc", "sim", "token_cells"]
