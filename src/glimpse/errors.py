"""Errors raised by glimpse.

Every error a user can cause is a `GlimpseError`; the CLI prints its message on one line and exits
with status 2, so scripts can tell user mistakes from crashes. Messages say what to do next and
name no command-line flag (the CLI adds its own wording). Fallbacks are warnings (`GlimpseWarning`).
"""

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


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


class ResourceError(GlimpseError):
    """The explanation ran out of memory."""


class TrainingError(GlimpseError):
    """A training run cannot go on as asked (its folder holds a checkpoint of another recipe)."""


class BatchError(GlimpseError):
    """A batch run cannot start or go on as asked: a malformed input row, an output folder made with
    other settings, an unsafe item id."""


class DatasetError(GlimpseError):
    """A dataset folder lacks files of its published layout, or holds none of its items."""


class ExplanationError(GlimpseError):
    """A saved explanation is damaged or not one (a missing or mistyped field, arrays of the wrong shape,
    an index out of range, a file reference outside its folder)."""


class OutputError(GlimpseError):
    """An output folder that cannot be written, or that already holds files and was not to be overwritten."""


class OptionError(MethodError):
    """An option the chosen method does not take, or a value it refuses."""


class GlimpseWarning(UserWarning):
    """Base class of every warning glimpse gives: each marks a fallback or a caveat that is also
    written to the result's `notes` and logged on the "glimpse" logger."""


class FallbackWarning(GlimpseWarning):
    """The method could not do what was asked and took its documented fallback (uniform or prior
    weights, all prompt tokens for an unlocated question, no layer carrying the image)."""


class CostWarning(GlimpseWarning):
    """The method needed more work than its one pass (e.g. TAM's extra forward pass)."""


class DomainWarning(GlimpseWarning):
    """The input is outside what the model knows (a photo given to the shipped shapes-world model)."""


logger = logging.getLogger("glimpse")
# A library logs, the application decides where to: without a handler of the user's, nothing is printed
# twice (the warning already shows).
logger.addHandler(logging.NullHandler())


def note(notes: list[str], message: str, category: type[GlimpseWarning] = FallbackWarning) -> None:
    """Make a fallback visible three ways: the "glimpse" logger, a warning of `category` and a line
    appended to `notes` (saved with the result)."""
    logger.warning(message)
    warnings.warn(message, category, stacklevel=3)
    notes.append(message)


class InputWarning(GlimpseWarning):
    """An input was taken in part: an answer longer than the default cap explained only up to it,
    answer words the tokenizer does not know explained as its unknown token or left out, a model
    whose weights lack parameters its config asks for (those start random)."""


@contextmanager
def collected(category: type[Warning]) -> Iterator[list[str]]:
    """The messages of the `category` warnings raised inside, each once, in order, kept instead of
    shown (the list fills when the block ends, by an error too); every other warning passes on as
    it would have."""
    messages: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", category)
            yield messages
    finally:
        _sorted_out(caught, category, messages)


def _sorted_out(caught: list[warnings.WarningMessage], category: type[Warning], messages: list[str]) -> None:
    for warning in caught:
        if not issubclass(warning.category, category):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif str(warning.message) not in messages:
            messages.append(str(warning.message))
