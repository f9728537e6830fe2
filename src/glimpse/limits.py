"""Defaults that bound the work of one explanation, import-cheap so that the command line's help can
state them."""

# The answer tokens explained when `max_answer_tokens` is not given: each costs a backward pass (or a
# block of one) in most methods, and a long answer's late tokens say little about the image.
DEFAULT_MAX_ANSWER_TOKENS = 64
