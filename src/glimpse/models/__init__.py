"""Model-family adapters and their registry.

`adapter_for(model, processor)` picks the adapter whose `architectures` names the model's class.
Register another family with `register_adapter(MyAdapter)`.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedModelError
from .base import Adapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter, LlavaOnevisionAdapter
from .idefics3 import Idefics3Adapter
from .qwen import QwenVLAdapter
from .internvl import InternVLAdapter
from .paligemma import PaliGemmaAdapter
from .gemma3 import Gemma3Adapter
from .mllama import MllamaAdapter

_ADAPTERS: list[type[Adapter]] = []


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    _ADAPTERS.append(cls)
    return cls


def supported_architectures() -> list[str]:
    return sorted(arch for cls in _ADAPTERS for arch in cls.architectures)


def adapter_for(model: Any, processor: Any) -> Adapter:
    for cls in _ADAPTERS:
        if cls.matches(model):
            return cls(model, processor)
    raise UnsupportedModelError(
        f"no glimpse adapter for {type(model).__name__}; supported: {', '.join(supported_architectures())}")


register_adapter(LlavaAdapter)
register_adapter(LlavaNextAdapter)
register_adapter(LlavaOnevisionAdapter)
register_adapter(Idefics3Adapter)
register_adapter(QwenVLAdapter)
register_adapter(InternVLAdapter)
register_adapter(PaliGemmaAdapter)
register_adapter(Gemma3Adapter)
register_adapter(MllamaAdapter)

__all__ = ["Adapter", "adapter_for", "register_adapter",
           "supported_architectures"]
