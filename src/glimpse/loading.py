"""`load`: a model and its processor from a hub id or a local folder, ready for `explain`."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .errors import ModelLoadError, UnsupportedModelError
from .models import supported_architectures

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Loaded(NamedTuple):
    model: Any
    processor: Any


def load(model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
         revision: str | None = None, trust_remote_code: bool = False, device_map: str | None = None) -> Loaded:
    """Load `model` (hub id or local folder; None = the shipped shapes-world model).

    device "auto" picks CUDA when available; dtype "auto" is bfloat16 on GPU and float32 on CPU.
    `device_map="auto"` spreads a model too large for one GPU. Hub ids honour the local cache and
    HF_HUB_OFFLINE; a model that is not available offline raises `ModelLoadError`.
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    source = resolve_model(model)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_available(source, exc)) from None
    _check_supported(config)
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("device_map needs the accelerate package: pip install 'glimpse-lvlm[multi-gpu]'")
    try:
        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
        except ImportError as exc:
            if "torchvision" not in str(exc).lower():
                raise
            processor = _processor_without_video(source, config, **kwargs)
        loaded = AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, attn_implementation="sdpa", **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_not_available(source, exc)) from None
    if device_map is None:
        loaded.to(device)
    loaded.eval()
    return Loaded(loaded, processor)


def _processor_without_video(source: str, config: Any, **kwargs: Any) -> Any:
    """The model's processor with its video slot left out, for image-only use.

    Processors with a video slot (Qwen2-VL and later, InternVL, LLaVA-OneVision, SmolVLM) load a
    video processor that needs torchvision, even when only images are processed. The processor
    class comes from the folder's processor_config.json / preprocessor_config.json, else from the
    model type (as AutoProcessor picks it); `without_video` of it then loads everything else
    (image processor, tokenizer, chat template, processor options) the usual way.
    """
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.utils import cached_file

    name = None
    for filename in ("processor_config.json", "preprocessor_config.json"):
        path = cached_file(source, filename, revision=kwargs.get("revision"),
                           _raise_exceptions_for_missing_entries=False)
        name = json.loads(Path(path).read_text()).get("processor_class") if path else None
        if name:
            break
    name = name or PROCESSOR_MAPPING_NAMES.get(config.model_type)
    base = getattr(transformers, name, None) if name else None
    if base is None:
        raise ModelLoadError(f"cannot build the processor of {source!r} without torchvision (class {name!r} unknown)")
    return without_video(base).from_pretrained(source, **kwargs)


def without_video(base: type) -> type:
    """Processor class `base` without its video slot: it neither loads nor requires a video
    processor (ProcessorMixin builds, checks and loads exactly the parts `get_attributes` lists)."""

    class WithoutVideo(base):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [a for a in super().get_attributes() if "video" not in a]

    WithoutVideo.__name__ = WithoutVideo.__qualname__ = base.__name__
    return WithoutVideo


def resolve_device(device: str) -> str:
    """"auto": CUDA when available, else the CPU; anything else as given."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def resolve_model(model: str | os.PathLike | None) -> str:
    """The folder (None: the shipped model's) or hub id that `load` reads `model` from."""
    if model is None:
        from .toy.model import default_model_path
        path = default_model_path()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"the shipped shapes-world model is missing from {path}; reinstall glimpse-lvlm")
        return str(path)
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json in it)")
        return str(path)
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        raise ModelLoadError(f"model folder does not exist: {path}")
    return text


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """dtype `name` ("auto": bfloat16 on GPU, float32 elsewhere) on `device`."""
    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _check_supported(config: Any) -> None:
    architectures = getattr(config, "architectures", None) or []
    supported = supported_architectures()
    if architectures and not set(architectures) & set(supported):
        raise UnsupportedModelError(
            f"glimpse has no adapter for {', '.join(architectures)}; supported: {', '.join(supported)}")


def _not_available(source: str, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    where = "offline (HF_HUB_OFFLINE is set)" if offline else "from the hub or the local cache"
    first = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return (f"cannot load model {source!r} {where}: {first}. Download it once with network access "
            "(it is then cached), or pass a local model folder")
