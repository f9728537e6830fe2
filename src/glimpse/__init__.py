"""glimpse: explain what a generative vision-language model looked at when it answered.

The package is lazy (PEP 562): `import glimpse` loads neither torch nor transformers; the first
use of a name that needs them (`glimpse.load`, `glimpse.explain`, ...) imports its module.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    AnswerError,
    BatchError,
    CaptureError,
    CostWarning,
    DatasetError,
    DomainWarning,
    ExplanationError,
    FallbackWarning,
    GlimpseError,
    GlimpseWarning,
    ImageError,
    InputWarning,
    MethodError,
    ModelLoadError,
    OptionError,
    OutputError,
    PromptError,
    ResourceError,
    TrainingError,
    UnsupportedModelError,
)

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "explain": "pipeline", "Explanation": "explanation", "load": "loading",
    "get_method": "methods", "list_methods": "methods", "register_method": "methods", "unregister_method": "methods",
    "adapter_for": "models", "register_adapter": "models", "unregister_adapter": "models", "supported_architectures": "models",
    "ImageLayout": "layout", "ImageTile": "layout", "SequenceLayout": "layout",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'glimpse' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AnswerError", "BatchError", "CaptureError", "CostWarning", "DatasetError", "DomainWarning", "Explanation",
    "ExplanationError",
    "FallbackWarning", "GlimpseError", "GlimpseWarning", "ImageError", "ImageLayout", "InputWarning", "ImageTile", "MethodError",
    "ModelLoadError", "OptionError", "OutputError", "PromptError", "ResourceError", "SequenceLayout", "TrainingError",
    "UnsupportedModelError",
    "adapter_for", "explain", "get_method",
    "list_methods", "load", "register_adapter", "register_method", "supported_architectures", "unregister_adapter",
    "unregister_method", "__version__",
]
