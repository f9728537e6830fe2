"""Analyses of explanations, each an HTML report a person reads plus JSON: `tokens` (token-level
dynamics), `hallucination` (how well each answer word is grounded), `misalignment` (where a
batch's maps peak against the evidence), `bias` (the share of relevance on the image against the
prompt, and counterfactual prompts: one word swapped, the change in answers and maps),
`faithfulness` (deletion and insertion curves of the holistic map and of each token's map)."""

from .bias import (
    batch_shares,
    counterfactual,
    counterfactual_items,
    counterfactual_summary,
    modality_shares,
    write_batch_bias_report,
    write_bias_report,
    write_counterfactual_report,
)
from .faithfulness import faithfulness_profile, write_faithfulness_report
from .hallucination import grounding, write_hallucination_report
from .tokens import token_dynamics, tokens_report, write_tokens_report

__all__ = ["batch_shares", "counterfactual", "counterfactual_items", "counterfactual_summary", "faithfulness_profile",
           "grounding", "modality_shares", "token_dynamics", "tokens_report", "write_batch_bias_report",
           "write_bias_report", "write_counterfactual_report", "write_faithfulness_report", "write_hallucination_report",
           "write_tokens_report"]
