"""What every explanation method is: a layer reducer for capture plus pure tensor maths."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..blocks import LayerAttention
from ..capture import Capture, Reducer, TokenTrace, Trace, language_layer_count, logits_kwargs
from ..errors import MethodError
from ..layout import SequenceLayout
from ..models.base import Adapter

EXPLAINED = ("logit", "log_prob", "attention")


@dataclass
class MethodResult:
    """A method's output, indexed like the layout: V positions in image order, P in prompt order.

    The core every method fills: token_visual[t] [V] and token_prompt[t] [P] are answer token t's
    scores; visual and prompt are the holistic maps over the whole answer; token_weights[t] is the
    weight token t carries in the holistic visual map (GLIMPSE's beta^V, 1/T for a mean, 1 for a sum).
    `details` is the method's own section (the names its class declares in `Method.details`);
    `notes` say which fallbacks the method took.
    """

    token_visual: torch.Tensor
    token_prompt: torch.Tensor
    visual: torch.Tensor
    prompt: torch.Tensor
    token_weights: torch.Tensor
    layers: list[int]
    probs: torch.Tensor | None = None  # p_t of each answer token; filled by `run`
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # How capture computed attention: "blockwise" or "full_matrix" (None: the method reads no attention).
    attention_path: str | None = None


class Method(ABC):
    """Base class of every explanation method.

    `run` gets the model, its adapter, the teacher-forced inputs and the layout, and returns a
    `MethodResult`. Attention-based methods subclass `AttentionMethod` and only write maths.

    A method declares, as class attributes: `name`, `summary`, `paper`; `explains`, the quantity
    its scores explain ("logit": the raw logit z_t of y_t, "log_prob": log p(y_t), "attention":
    no output quantity, the attention pattern itself); `options`, the help text of every
    constructor argument (the constructor's signature holds their defaults: one source for the
    library, the CLI and the docs); `details`, the names and meanings of the values of its own
    section of the result; and `token_ranking`, what `rank_tokens` ranks answer tokens by.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    approximate: ClassVar[bool] = False
    explains: ClassVar[str] = "logit"
    options: ClassVar[dict[str, str]] = {}
    details: ClassVar[dict[str, str]] = {}
    token_ranking: ClassVar[str] = "the positive image relevance the token adds to the holistic map"
    # Whether the method can explain images that enter only through cross-attention (layouts whose V
    # are vision keys, not sequence positions: Mllama). Methods that read V off sequence rows cannot.
    cross_attention: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        """The options this instance runs with (every declared option, by name)."""
        return {name: getattr(self, name) for name in self.options}

    @abstractmethod
    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        """The explanation of the answer in `inputs` (teacher forced), indexed like `layout`."""

    def rank_tokens(self, result: MethodResult) -> torch.Tensor:
        """One score per answer token, higher first, by which displays pick tokens (`token_ranking`)."""
        return positive_contribution(result.token_weights, result.token_visual)


def positive_contribution(weights: Any, token_visual: Any) -> Any:
    """weights[t] * sum_v max(token_visual[t, v], 0): what token t adds to the holistic map's positive
    mass (numpy arrays or torch tensors)."""
    return weights * (token_visual * (token_visual > 0)).sum(1)


def option_defaults(cls: type[Method]) -> dict[str, Any]:
    """Every option of a method class with its default, from the constructor's signature."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: parameters[name].default for name in cls.options}


def check_declaration(cls: type[Method]) -> None:
    """A method class declares exactly its constructor's keyword arguments as options, each with a
    default, and a known `explains`; raised at registration, for the method's author."""
    parameters = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    if set(parameters) != set(cls.options):
        raise MethodError(f"method {cls.name!r}: `options` declares {sorted(cls.options)}, but the constructor "
                        f"takes {sorted(parameters)}")
    missing = [name for name, default in option_defaults(cls).items() if default is inspect.Parameter.empty]
    if missing:
        raise MethodError(f"method {cls.name!r}: options without a default: {missing}")
    if cls.explains not in EXPLAINED:
        raise MethodError(f"method {cls.name!r}: explains must be one of {EXPLAINED}, got {cls.explains!r}")


SINKS_HELP = ("zero the attention columns of the sink keys (the first position and the chat template before the "
              "first image token) before the method's maths")


class AttentionMethod(Method):
    """A method computed from the language model's attention (and its gradients) via `Capture`.

    A subclass overrides `reduce_layer` and `combine` (and, to run block-wise on long sequences
    without N x N matrices, `blockwise`, `reduce_blocks` and optionally `token_batch`). `reduce_layer(attn, grad, query)` receives
    one layer's attention probabilities and the gradient of the current answer token's logit with
    respect to them (both [heads, N, N], float32; grad is None when `gradients` is "none") and
    returns the small tensors `combine` needs; it runs inside the backward pass.
    `gradients`: "per_token" (exact), "sum" (one backward of the summed logits) or "none".

    `exclude_sinks` (an option of every attention method): the attention columns of the sink keys
    (`sink_positions`) are zeroed before `reduce_layer` sees the attention, so no method's maths
    can route relevance through them; methods that renormalise rows do so after the zeroing. The
    gradients are left as the model gives them (dz/dA is a property of the model at A, not of
    the attention pattern).
    """

    gradients: ClassVar[str] = "per_token"
    options: ClassVar[dict[str, str]] = {"exclude_sinks": SINKS_HELP}

    def __init__(self, exclude_sinks: bool = False) -> None:
        self.exclude_sinks = bool(exclude_sinks)

    def layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers))

    @abstractmethod
    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        """One layer's attention (and gradient) reduced to what `combine` needs."""

    def blockwise(self, model: Any, n_positions: int) -> bool:
        """Whether to capture block-wise (the model's sdpa kept, attention recomputed by
        `reduce_blocks` in row blocks) for a sequence of `n_positions`. Default: explicit matrices."""
        return False

    def token_batch(self, model: Any, layout: SequenceLayout, layers: list[int]) -> int:
        """How many answer tokens share one batched backward pass when capturing block-wise. Default 1."""
        return 1

    def reduce_blocks(self, attention: LayerAttention, query: int) -> dict[str, Any]:
        """`reduce_layer` for block-wise capture: the layer's inputs with this token's grad_output
        (`blocks.LayerAttention`), self- and cross-attention alike. Only methods whose `blockwise`
        can be True implement it."""
        raise NotImplementedError

    def reduce_cross_layer(self, attn: torch.Tensor, grad: torch.Tensor | None,
                           query: int) -> dict[str, torch.Tensor]:
        """`reduce_layer` for a cross-attention layer: attn and grad are [heads, N, K vision keys].
        Only methods with `cross_attention = True` implement it."""
        raise NotImplementedError

    def finish_token(self, token: TokenTrace, layers: list[int], n_layers: int, cross: frozenset[int]) -> None:
        """Called right after answer token `token`'s backward pass (per-token gradients) with the
        captured `layers`, the model's layer count and the cross-attention layers among them. A
        method may reduce the token's layers into `token.summary` here and drop them, so that only
        one token's reduced layers are alive at a time. Default: keep them for `combine`."""

    @abstractmethod
    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        """The result from every answer token's reduced layers (or the summaries `finish_token` made)."""

    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        n_layers = language_layer_count(model)
        layers = self.layers(n_layers)
        check_images(self, layout)
        blockwise = self.blockwise(model, layout.length)
        sinks = sink_positions(layout) if self.exclude_sinks else []
        reduce: Any = self.reduce_blocks if blockwise else self.reduce_layer
        if sinks and not blockwise:
            # Sinks are sequence keys: a cross-attention layer's keys are vision tokens, so its reducer is left as is.
            reduce = without_keys(reduce, sinks)
        cross = self.reduce_cross_layer if self.cross_attention else None
        cross_layers = frozenset(adapter.cross_attention_layers())

        def finish(token: TokenTrace, captured: list[int]) -> None:
            self.finish_token(token, captured, n_layers, cross_layers & set(captured))

        with Capture(model, adapter.text_config_key, reduce, layers, cross_layers=cross_layers,
                     reduce_cross=cross, bidirectional=adapter.bidirectional_pairs(inputs, layout),
                     blockwise=blockwise, zero_keys=sinks if blockwise else ()) as capture:
            trace = capture.run(inputs, layout, self.gradients, on_token=finish,
                                token_batch=self.token_batch(model, layout, layers) if blockwise else 1)
        result = self.combine(trace, layout)
        result.notes = trace.notes + result.notes
        result.probs = torch.tensor([t.prob for t in trace.tokens], dtype=torch.float32)
        result.attention_path = "blockwise" if blockwise else "full_matrix"
        return result


def sink_positions(layout: SequenceLayout) -> list[int]:
    """Attention-sink keys: the first position and the chat-template tokens before the first image
    token, i.e. every position before the first image token that is neither an image nor a
    question token (the first position is included by the same rule unless it is one of those)."""
    image = set(layout.image_sequence_positions)
    keep = image | set(layout.prompt)
    first_image = min(image, default=layout.length)
    return [p for p in range(max(first_image, 1)) if p not in keep]


def check_images(method: Method, layout: SequenceLayout) -> None:
    """Refuse a layout whose images enter through cross-attention if the method cannot explain them."""
    if layout.cross_attention and not method.cross_attention:
        raise MethodError(f"method {method.name!r} reads image relevance at sequence positions, but this model's "
                          "images enter only through cross-attention; use a method that supports it (glimpse, "
                          "glimpse_fast or a pixel-space method)")


def without_keys(reduce: Reducer, keys: list[int]) -> Reducer:
    """`reduce` applied to attention whose columns `keys` are zero."""
    index = torch.tensor(keys, dtype=torch.long)

    def reduce_masked(attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        return reduce(attn.index_fill(-1, index.to(attn.device), 0.0), grad, query)
    return reduce_masked


def result_from_tokens(token_visual: torch.Tensor, token_prompt: torch.Tensor, layers: list[int],
                       weights: torch.Tensor) -> MethodResult:
    """A result whose holistic maps weigh every answer token by the same `weights` [T] in both
    modalities: visual = weights @ token_visual, prompt = weights @ token_prompt. Baselines use 1/T
    (the mean over tokens) or 1 (the sum, for attributions of the answer's log-likelihood, which
    is the sum of its tokens' log-probabilities)."""
    weights = weights.float()
    return MethodResult(token_visual=token_visual.float(), token_prompt=token_prompt.float(),
                        visual=weights @ token_visual.float(), prompt=weights @ token_prompt.float(),
                        token_weights=weights.clone(), layers=layers)


def answer_logits(model: Any, inputs: dict[str, torch.Tensor], n_answer: int, **kwargs: Any) -> tuple[Any, torch.Tensor]:
    """One forward pass; returns the output and the logits at the answer tokens' query rows
    ([batch, n_answer, vocab], float32)."""
    out = model(**inputs, use_cache=False, **logits_kwargs(model, n_answer), **kwargs)
    return out, out.logits[:, -(n_answer + 1): -1].float()
