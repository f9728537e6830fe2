"""A small, genuinely trained LLaVA on a synthetic shapes world (see docs/toy.md)."""
