"""Analyses of explanations, each an HTML report a person reads plus JSON: `tokens` (token-level
dynamics), `hallucination` (how well each answer word is grounded)."""

from .hallucination import grounding, write_hallucination_report
from .tokens import token_dynamics, tokens_report, write_tokens_report

__all__ = ["grounding", "token_dynamics", "tokens_report", "write_hallucination_report", "write_tokens_report"]
