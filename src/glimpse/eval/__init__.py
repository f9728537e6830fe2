"""Evaluation of explanations: localisation against evidence masks, agreement with human fixations."""

from .metrics import cc, energy_in_mask, nss, pointing_chance, pointing_game, token_cells

__all__ = ["cc", "energy_in_mask", "nss", "pointing_chance", "pointing_game", "token_cells"]
