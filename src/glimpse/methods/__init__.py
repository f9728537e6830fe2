"""Explanation methods behind one registry: `get_method(name, **options)`, `list_methods()`."""

from __future__ import annotations

from typing import Any

from ..errors import MethodError
from .attention import AttentionGuidedCam, GenericAttention, GradCamAttention, RawAttention, Rollout
from .base import AttentionMethod, Method, MethodResult
from .glimpse import Glimpse, GlimpseFast
from .pixels import InputGradient, IntegratedGradients, Occlusion
from .tam import TokenActivationMap

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> dict[str, type[Method]]:
    """Every registered method by name, in registration order (GLIMPSE first)."""
    return dict(_METHODS)


def get_method(name: str, **options: Any) -> Method:
    if name not in _METHODS:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(_METHODS)}")
    try:
        return _METHODS[name](**options)
    except TypeError as exc:
        raise MethodError(f"invalid option for method {name!r}: {exc}") from None


for _method in (Glimpse, GlimpseFast, RawAttention, Rollout, GradCamAttention, AttentionGuidedCam, GenericAttention,
                TokenActivationMap, InputGradient, IntegratedGradients, Occlusion):
    register_method(_method)

__all__ = ["AttentionMethod", "Method", "MethodResult", "get_method", "list_methods", "register_method"]
