"""Errors raised by glimpse.

Every error a user can cause is a `GlimpseError`; the CLI prints its message on one line and exits
with status 2, so scripts can tell user mistakes from crashes. Messages say what to do next.
"""


class GlimpseError(Exception):
    """Base class of every error glimpse raises on purpose."""


class ImageError(GlimpseError):
    """An image is missing, unreadable, or not an image."""


class PromptError(GlimpseError):
    """The prompt (question) is empty or cannot be located in the model's input."""


class AnswerError(GlimpseError):
    """The answer to explain is empty or tokenizes to nothing."""


class ModelLoadError(GlimpseError):
    """A model id or folder cannot be loaded (missing folder, not cached offline, bad files)."""


class UnsupportedModelError(GlimpseError):
    """No adapter knows this model's architecture."""


class CaptureError(GlimpseError):
    """Attention could not be captured correctly (none seen, or not causal)."""


class MethodError(GlimpseError):
    """An unknown explanation method or an invalid option for it."""
