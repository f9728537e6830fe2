"""Evaluation of explanations: localisation metrics against ground-truth evidence masks."""

from .metrics import energy_in_mask, pointing_chance, pointing_game, token_cells

__all__ = ["energy_in_mask", "pointing_chance", "pointing_game", "token_cells"]
