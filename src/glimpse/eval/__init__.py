"""Evaluation of explanations: localisation metrics against ground-truth evidence masks."""

from .metrics import energy_in_mask, pointing_game

__all__ = ["energy_in_mask", "pointing_game"]
