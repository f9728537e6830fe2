"""Model-family adapters and their registry.

`adapter_for(model, processor)` picks the adapter whose `architectures` names the model's class.
Register another family, or replace a built-in one, with `register_adapter(MyAdapter)`: the
adapters registered last are tried first. `unregister_adapter` takes one out again.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import UnsupportedModelError
from .aya_vision import AyaVisionAdapter
from .base import Adapter
from .gemma3 import Gemma3Adapter
from .idefics3 import Idefics3Adapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter, LlavaOnevisionAdapter
from .mllama import MllamaAdapter
from .paligemma import PaliGemmaAdapter
from .qwen import QwenVLAdapter

# Tried in order: the latest registration comes first.
_ADAPTERS: list[type[Adapter]] = []


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Make `cls` handle its `architectures`, ahead of every adapter registered before it.
    Returns `cls`, so it can decorate the class."""
    if not (inspect.isclass(cls) and issubclass(cls, Adapter)):
        raise UnsupportedModelError(f"{cls!r} is not a glimpse Adapter subclass; subclass glimpse.models.Adapter")
    if not cls.architectures or not cls.family:
        raise UnsupportedModelError(f"{cls.__name__} must declare `family` and the model class names it handles "
                                    "in `architectures`")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise UnsupportedModelError(f"{cls.__name__} does not implement {missing}")
    if cls in _ADAPTERS:
        _ADAPTERS.remove(cls)
    _ADAPTERS.insert(0, cls)
    return cls


def unregister_adapter(cls: type[Adapter]) -> None:
    """Take `cls` out of the registry; the adapters registered before it handle its architectures again."""
    if cls not in _ADAPTERS:
        raise UnsupportedModelError(f"{getattr(cls, '__name__', cls)!r} is not a registered adapter")
    _ADAPTERS.remove(cls)


def supported_architectures() -> list[str]:
    return sorted({arch for cls in _ADAPTERS for arch in cls.architectures})


def adapter_for(model: Any, processor: Any) -> Adapter:
    for cls in _ADAPTERS:
        if cls.matches(model):
            return cls(model, processor)
    raise UnsupportedModelError(
        f"no glimpse adapter for {type(model).__name__}; supported: {', '.join(supported_architectures())}")


for _builtin in (LlavaAdapter, LlavaNextAdapter, LlavaOnevisionAdapter, Idefics3Adapter, QwenVLAdapter,
                 InternVLAdapter, PaliGemmaAdapter, Gemma3Adapter, MllamaAdapter, AyaVisionAdapter):
    register_adapter(_builtin)

__all__ = ["Adapter", "adapter_for", "register_adapter", "supported_architectures", "unregister_adapter"]
