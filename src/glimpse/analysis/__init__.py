"""Analyses of explanations, each an HTML report a person reads plus JSON: `tokens` (token-level
dynamics)."""

from .tokens import token_dynamics, tokens_report, write_tokens_report

__all__ = ["token_dynamics", "tokens_report", "write_tokens_report"]
