"""glimpse: explain what a generative vision-language model looked at when it answered."""

__version__ = "0.1.0"

from .errors import (AnswerError, CaptureError, GlimpseError, ImageError, MethodError,  # noqa: E402
                     ModelLoadError, PromptError, UnsupportedModelError)
from .explain import explain  # noqa: E402
from .explanation import Explanation  # noqa: E402
from .loading import load  # noqa: E402
from .methods import get_method, list_methods, register_method  # noqa: E402
from .models import adapter_for, register_adapter, supported_architectures  # noqa: E402

__all__ = [
    "AnswerError", "CaptureError", "Explanation", "GlimpseError", "ImageError", "MethodError", "ModelLoadError",
    "PromptError", "UnsupportedModelError", "adapter_for", "explain", "get_method", "list_methods", "load",
    "register_adapter", "register_method", "supported_architectures", "__version__",
]
