"""`load`: a model and its processor from a hub id or a local folder, ready for `explain`."""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .errors import InputWarning, ModelLoadError, UnsupportedModelError, logger
from .models import supported_architectures

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The weight files (or their shard indices) from_pretrained reads from a folder, in its order.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class Loaded(NamedTuple):
    model: Any
    processor: Any


def load(model: str | os.PathLike | None = None, *, device: str = "auto", dtype: str = "auto",
         revision: str | None = None, trust_remote_code: bool = False, device_map: str | None = None) -> Loaded:
    """Load `model` (hub id or local folder; None = the shipped shapes-world model).

    device "auto" picks CUDA when available; dtype "auto" is bfloat16 on GPU and float32 on CPU.
    `device_map="auto"` spreads a model too large for one GPU. Hub ids honour the local cache and
    HF_HUB_OFFLINE; a model that is not available offline raises `ModelLoadError`. A local folder
    that is incomplete or damaged (no weights, unreadable weights, weights of another shape than its
    config.json, no processor files) raises `ModelLoadError` saying what is wrong with it, and so
    does a device that is unknown or not present here; weights that lack parameters the config
    asks for (those start random) are warned about (`InputWarning`).
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    source = resolve_model(model)
    local = Path(source).is_dir()
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_bad_folder(source, "its config.json cannot be read", exc) if local
                             else _not_available(source, exc)) from None
    _check_supported(config)
    commit = None if local else _commit_of(source, revision)
    if device_map is not None and importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("device_map needs the accelerate package: pip install 'glimpse-lvlm[multi-gpu]'")
    # A PEFT adapter folder (adapter_config.json) names its base model instead of holding weights.
    if local and not any((Path(source) / name).is_file() for name in (*WEIGHT_FILES, "adapter_config.json")):
        raise ModelLoadError(f"the model folder {source} has no weights: none of {', '.join(WEIGHT_FILES)} is in it; "
                             "save the model into it (model.save_pretrained) or copy its weight files there")
    try:
        try:
            processor = AutoProcessor.from_pretrained(source, **kwargs)
        except ImportError as exc:
            if "torchvision" not in str(exc).lower():
                raise
            processor = _processor_without_video(source, config, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        if not local:
            raise ModelLoadError(_not_available(source, exc)) from None
        lacks = _missing_processor_files(Path(source))
        raise ModelLoadError(_bad_folder(source, f"it has no {lacks}" if lacks else "its processor (tokenizer, image "
                                         "processor) cannot be loaded", None if lacks else exc,
                                         "save the model's processor into it too (processor.save_pretrained)")) \
            from None
    try:
        loaded, info = AutoModelForImageTextToText.from_pretrained(
            source, dtype=torch_dtype, device_map=device_map, attn_implementation="sdpa", output_loading_info=True,
            **kwargs)
    except SafetensorError as exc:
        raise ModelLoadError(_bad_weights(source, local, "cannot be read, the file is damaged or incomplete", exc)) \
            from None
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise ModelLoadError(_bad_weights(source, local, "do not match its config.json: parameters of other shapes "
                                          "(transformers' load report, logged, names them)")) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_bad_folder(source, "its weights cannot be loaded", exc) if local
                             else _not_available(source, exc)) from None
    _warn_missing(source, info.get("missing_keys") or ())
    if device_map is None:
        try:
            loaded.to(device)
        except (AssertionError, RuntimeError) as exc:  # a device torch named but cannot use after all
            raise ModelLoadError(f"cannot move the model to device {device!r}: {_first_line(exc)}") from None
    loaded.eval()
    if commit is not None:
        loaded.config._commit_hash = commit  # where explain reads the revision, as transformers 4 kept it
    return Loaded(loaded, processor)


def _commit_of(source: str, revision: str | None) -> str | None:
    """The hub commit the files of `source` at `revision` come from (the cache's snapshot folder name)."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    path = cached_file(source, "config.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    return extract_commit_hash(path, None)


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
    """"auto": CUDA when available, else the CPU; anything else as given, once checked: a name torch
    does not know, or a device this machine lacks (CUDA without a GPU, a GPU index past the last),
    is a `ModelLoadError`."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N (N the GPU's index) or "
                             "mps") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is built without CUDA" if not torch.backends.cuda.is_built()
                   else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES)")
            raise ModelLoadError(f"device {device!r} needs a CUDA GPU, but {why}; use device 'cpu' (or 'auto', which "
                                 "takes a GPU only when there is one)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ModelLoadError(f"device {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                                 f"cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device {device!r} needs Apple's Metal (MPS), which this machine or PyTorch lacks; "
                             "use device 'cpu' or 'auto'")
    elif parsed.type != "cpu":
        backend = getattr(torch, parsed.type, None)
        if backend is not None and hasattr(backend, "is_available") and not backend.is_available():
            raise ModelLoadError(f"device {device!r} is not available on this machine; use device 'cpu' or 'auto'")
    return device


def resolve_model(model: str | os.PathLike | None) -> str:
    """The folder (None or "glimpse-toy": the shipped model's) or hub id that `load` reads `model` from."""
    from .render import SHIPPED_NAME

    if model is None or str(model) == SHIPPED_NAME:
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
    return (f"cannot load model {source!r} {where}: {_first_line(exc, sentence=False)}. Download it once with "
            "network access (it is then cached), or pass a local model folder")


def _bad_folder(source: str, problem: str, exc: Exception | None, advice: str = "") -> str:
    """The message for a local model folder that exists but cannot be loaded: what is wrong with it,
    never the hub's advice to download it (the folder is what glimpse was given)."""
    advice = advice or ("the folder needs a whole save_pretrained of the model and its processor (config.json, "
                        "the weights, the tokenizer and processor files)")
    cause = f" ({_first_line(exc)})" if exc is not None else ""
    return f"the model folder {source} is incomplete or damaged: {problem}{cause}; {advice}"


def _bad_weights(source: str, local: bool, problem: str, exc: Exception | None = None) -> str:
    cause = f" ({_first_line(exc)})" if exc is not None else ""
    if local:
        return (f"the model folder {source} is damaged: its weights {problem}{cause}; save or copy the model's "
                "weights and config.json into it again, from one and the same model")
    return (f"the cached weights of model {source!r} {problem}{cause}; delete the model from the Hugging Face "
            "cache and download it again with network access")


def _missing_processor_files(folder: Path) -> str:
    """Which kind of processor file `folder` lacks altogether ("" when it has some of each)."""
    kinds = {"tokenizer files (tokenizer.json, tokenizer.model or vocab.json)":
             ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model"),
             "image processor settings (processor_config.json or preprocessor_config.json)":
             ("processor_config.json", "preprocessor_config.json")}
    return " and no ".join(kind for kind, names in kinds.items() if not any((folder / n).is_file() for n in names))


def _warn_missing(source: str, missing: Any) -> None:
    """Warn (InputWarning, and on the "glimpse" logger) when weights lack parameters the config asks for."""
    if not missing:
        return
    names = sorted(missing)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    message = (f"the weights of {source} lack {len(names)} parameter(s) its config.json asks for ({shown}): they "
               "start random, so the model's answers and explanations mean little; its config.json and weights "
               "are probably from different models")
    logger.warning(message)
    warnings.warn(message, InputWarning, stacklevel=3)


def _first_line(exc: BaseException, sentence: bool = True) -> str:
    """The first line of the exception's message, or only its first sentence (about a local folder,
    transformers goes on with advice about the hub)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return (first.split(". ")[0] if sentence else first).rstrip(".")
