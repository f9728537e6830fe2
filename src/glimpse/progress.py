"""Progress bars for long work (generation, backward passes, integration steps, occlusion batches).

A bar goes to stderr and appears only once its work has taken `DELAY` seconds (tqdm's `delay`), so
quick work prints nothing. Bars are off inside `quiet()`, after `set_shown(False)` (in this context:
a `contextvars.ContextVar`, so threads and tasks do not switch each other's off) and whenever the
environment variable GLIMPSE_QUIET is set to anything but "" or "0". Importing this module is cheap
(tqdm and transformers are imported on use).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

DELAY = 2.0  # seconds of work before a bar is drawn
_SHOWN: ContextVar[bool] = ContextVar("glimpse_progress_shown", default=True)


def shown() -> bool:
    """Whether bars are drawn here and now."""
    return _SHOWN.get() and os.environ.get("GLIMPSE_QUIET", "") in ("", "0")


def set_shown(enabled: bool) -> Token[bool]:
    """Turn bars on or off in the current context; `reset(token)` undoes it."""
    return _SHOWN.set(bool(enabled))


def reset(token: Token[bool]) -> None:
    _SHOWN.reset(token)


@contextmanager
def quiet() -> Iterator[None]:
    """No bars inside."""
    token = set_shown(False)
    try:
        yield
    finally:
        reset(token)


def steps(total: int, description: str) -> Any:
    """A tqdm bar of `total` steps on stderr (use it as a context manager; `update(n)` advances it)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, file=sys.stderr, delay=DELAY, disable=not shown(),
                dynamic_ncols=True)


def token_streamer(bar: Any) -> Any:
    """A `model.generate` streamer advancing `bar` one step per new token (the prompt, put first, is not one);
    an answer ended before the limit ends its bar at 100%."""
    from transformers.generation.streamers import BaseStreamer

    class TokenStreamer(BaseStreamer):
        prompt_seen = False

        def put(self, value: Any) -> None:
            if self.prompt_seen:
                bar.update(1)
            self.prompt_seen = True

        def end(self) -> None:
            bar.total = bar.n

    return TokenStreamer()
