"""Explanation methods behind one registry: `get_method(name, **options)`, `list_methods()`.

A method is one class (see `Method`): its constructor's keyword arguments are its options, with
their defaults, and its `options` class attribute gives each one's help text; the CLI and the
docs read both from there.
"""

from __future__ import annotations

import json
import math
import types
import typing
from typing import Any

from ..errors import MethodError, OptionError
from .attention import AttentionGuidedCam, GenericAttention, GradCamAttention, RawAttention, Rollout
from .base import AttentionMethod, Method, MethodResult, check_declaration, option_defaults
from .glimpse import Glimpse, GlimpseFast
from .pixels import InputGradient, IntegratedGradients, Occlusion
from .tam import TokenActivationMap

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a method (or replace the one of the same name); its declaration is checked first."""
    if not (isinstance(cls, type) and issubclass(cls, Method)) or not cls.name:
        raise MethodError(f"{cls!r} is not a Method subclass with a name")
    check_declaration(cls)
    _METHODS[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove the method registered as `name` (a user's own, or a built-in one)."""
    method_class(name)
    del _METHODS[name]


def list_methods() -> dict[str, type[Method]]:
    """Every registered method by name, in registration order (GLIMPSE first)."""
    return dict(_METHODS)


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(_METHODS)}")
    return _METHODS[name]


def get_method(name: str, **options: Any) -> Method:
    """An instance of method `name` with `options`; an option it does not take is an `OptionError`."""
    cls = method_class(name)
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        takes = ", ".join(cls.options) or "no options"
        raise OptionError(f"method {name!r} does not take {', '.join(map(repr, unknown))}; it takes: {takes}")
    for option, value in options.items():
        check_option_type(cls, option, value)
    return cls(**options)


def check_option_type(cls: type[Method], option: str, value: Any) -> None:
    """Refuse a value whose type the constructor's annotation does not admit (an int is a float;
    a bool is neither), so a wrong type is an `OptionError`, not a crash inside the method."""
    if isinstance(value, float) and not math.isfinite(value):  # NaN would flow into every score and the JSON
        raise OptionError(f"option {option!r} of method {cls.name!r} must be a finite number, got {value!r}")
    expected = typing.get_type_hints(cls.__init__).get(option)
    allowed = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    if expected is None or any(_admits(kind, value) for kind in allowed):
        return
    names = " or ".join("None" if kind is type(None) else getattr(kind, "__name__", str(kind)) for kind in allowed)
    raise OptionError(f"option {option!r} of method {cls.name!r} must be {names}, got {value!r}")


def _admits(kind: Any, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return kind is Any or (isinstance(kind, type) and isinstance(value, kind))


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE texts as method options: values are read as JSON where they parse (numbers, true,
    null, ...), True and False in any case as booleans, the number spellings JSON lacks (nan, inf in
    any case) as numbers (which the options' finite check then names), else kept as text (which a
    boolean option refuses); dashes in keys become underscores."""
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"a method option must be KEY=VALUE, got {pair!r}")
        options[key.strip().replace("-", "_")] = _option_value(text)
    return options


def _option_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    word = text.strip().lower()
    if word.lstrip("+-") in ("nan", "inf", "infinity"):
        return float(word)
    return {"true": True, "false": False}.get(word, text)


def parse_variant(entry: str) -> tuple[str, dict[str, Any]]:
    """A METHOD or METHOD:KEY=VALUE[:KEY=VALUE...] entry as (method name, its options as given)."""
    name, *pairs = entry.strip().split(":")
    return name.strip(), parse_options(pairs)


for _method in (Glimpse, GlimpseFast, RawAttention, Rollout, GradCamAttention, AttentionGuidedCam, GenericAttention,
                TokenActivationMap, InputGradient, IntegratedGradients, Occlusion):
    register_method(_method)

__all__ = ["AttentionMethod", "Method", "MethodResult", "get_method", "list_methods", "method_class",
           "option_defaults", "parse_options", "parse_variant", "register_method", "unregister_method"]
