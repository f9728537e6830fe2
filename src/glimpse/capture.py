"""Teacher-forced capture of language-model attention and its per-token gradients.

`Capture` swaps the language model's attention for `capture_attention`, registered through
transformers' attention interface: it computes the attention probabilities explicitly (with an
explicit causal and padding mask) whatever implementation the model was loaded with, while the
vision tower keeps its own attention. During the backward pass of each answer token, a tensor hook
hands every layer's attention and gradient to the method's `reduce_layer` as soon as the gradient
reaches that layer, so only the reduced form outlives the layer's backward step.

Cross-attention layers (declared by the adapter: Mllama's, where text queries attend to vision
tokens) are recorded and reduced apart from self-attention: their keys are not sequence positions,
so there is no causal structure to impose or check; the mask is the one the model passes (Mllama's
cross_attention_mask with fully masked text rows made uniform, exactly as eager attention applies
it), and their gradient-weighted attention goes to the method's own cross-attention reducer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask

from .errors import CaptureError
from .layout import SequenceLayout

CAPTURE_NAME = "glimpse_capture"
# (attention [heads, N, N], its gradient or None, query row) -> the tensors a method keeps.
# For a cross-attention layer the attention and gradient are [heads, N, K] (K vision keys).
Reducer = Callable[[torch.Tensor, "torch.Tensor | None", int], dict[str, torch.Tensor]]


@dataclass
class TokenTrace:
    """What capture saw for one answer token: its query row, probability and reduced layers."""

    position: int
    token_id: int
    prob: float
    logit: float
    layers: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def query(self) -> int:
        return self.position - 1


@dataclass
class Trace:
    """Everything a method gets from capture. `shared` holds layers reduced once for the whole
    answer (gradient mode "sum" or "none"), reduced with the last answer token's query row.
    `layers` are the requested layers that really called attention, increasing: all of them in a
    plain transformer, only some in a hybrid one (Qwen3.5's linear-attention layers never do)."""

    tokens: list[TokenTrace]
    n_layers: int
    n_heads: int
    shared: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    # The entries of `layers` that are cross-attention layers (reduced by the cross-attention reducer).
    cross_layers: list[int] = field(default_factory=list)


GRADIENT_MODES = ("per_token", "sum", "none")


class _Recorder:
    """Holds each layer's attention during one capture and reduces its gradient on arrival."""

    def __init__(self, reduce_layer: Reducer, layers: set[int] | None, bidirectional: torch.Tensor | None,
                 cross_layers: frozenset[int] = frozenset(), reduce_cross: Reducer | None = None) -> None:
        self.reduce_layer = reduce_layer
        self.cross_layers = cross_layers
        self.reduce_cross = reduce_cross
        self.wanted = layers
        self.bidirectional = bidirectional
        self.attn: dict[int, torch.Tensor] = {}
        self.query: int | None = None
        self.reduced: dict[int, dict[str, torch.Tensor]] = {}

    def record(self, module: Any, probs: torch.Tensor) -> None:
        layer = getattr(module, "layer_idx", None)
        layer = len(self.attn) if layer is None else int(layer)
        if layer in self.cross_layers:
            # Vision keys: nothing is "future" to a text query. Fail here, before any backward pass,
            # if the method cannot reduce such a layer.
            if self.reduce_cross is None and (self.wanted is None or layer in self.wanted):
                raise CaptureError(f"language-model layer {layer} is a cross-attention layer, which this method "
                                   "cannot explain")
        else:
            self._check_causal(layer, probs)
        self.attn[layer] = probs
        if probs.requires_grad and (self.wanted is None or layer in self.wanted):
            probs.register_hook(lambda grad, layer=layer: self._on_grad(layer, grad))

    def _check_causal(self, layer: int, probs: torch.Tensor) -> None:
        future = torch.triu(torch.ones(probs.shape[-2:], dtype=torch.bool, device=probs.device), diagonal=1)
        if self.bidirectional is not None:
            future &= ~self.bidirectional.to(probs.device)
        leak = probs.detach()[..., future]
        if leak.numel() and float(leak.abs().max()) > 1e-6:
            raise CaptureError(
                f"language-model layer {layer} attends to future tokens: its attention mask is missing or not "
                "causal, so the explanation would be wrong")

    def _on_grad(self, layer: int, grad: torch.Tensor) -> None:
        if self.query is None:
            return
        attn = self.attn[layer]
        self.reduced[layer] = self.reduce(layer, attn[0].detach(), grad[0].detach().float(), self.query)

    def reduce(self, layer: int, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        reducer = self.reduce_cross if layer in self.cross_layers else self.reduce_layer
        # Handed back on the CPU: methods combine them with CPU-side priors and weights (on a GPU model
        # GLIMPSE's combine would otherwise mix devices), and the accelerator keeps no reduced layers.
        return {name: value.cpu() for name, value in reducer(attn, grad, query).items()}

    def is_cross(self, module: Any) -> bool:
        return getattr(module, "layer_idx", None) in self.cross_layers


def _check_prefix_only(bidirectional: torch.Tensor, layout: SequenceLayout) -> None:
    """Allowed attention to later keys must stay inside the prompt. Methods keep each answer token's
    attention only up to its query row and column; that loses nothing when every row up to the
    query attends to keys up to the query, which holds exactly when no allowed later key lies in
    the answer (the first query row is the last prompt position)."""
    _, keys = torch.nonzero(torch.triu(bidirectional, diagonal=1), as_tuple=True)
    if len(keys) and int(keys.max()) >= layout.answer[0]:
        raise CaptureError(f"the adapter allows attention to the later position {int(keys.max())}, inside the answer; "
                           "only the prompt may attend bidirectionally")


_ACTIVE: list[_Recorder] = []


def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return states
    b, h, n, d = states.shape
    return states[:, :, None].expand(b, h, groups, n, d).reshape(b, h * groups, n, d)


def _causal_mask(q_len: int, k_len: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Queries are the last q_len keys (no cache offset in a teacher-forced pass).
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    mask = torch.zeros(q_len, k_len, dtype=dtype, device=device)
    return mask.masked_fill(k_pos > q_pos, torch.finfo(dtype).min)[None, None]


def capture_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with explicit probabilities, recorded for glimpse (dropout is never applied)."""
    if not _ACTIVE:
        raise CaptureError("glimpse's capture attention was called outside a capture")
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scaling
    softcap = kwargs.get("softcap")
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        # A cross-attention layer without a mask attends to every vision key, as eager would.
        if getattr(module, "is_causal", True) and not _ACTIVE[-1].is_cross(module):
            scores = scores + _causal_mask(scores.shape[-2], scores.shape[-1], scores.dtype, scores.device)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., : key.shape[-2]], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., : key.shape[-2]].float()
    probs = torch.softmax(scores, dim=-1)
    output = torch.matmul(probs.to(value.dtype), value)
    _ACTIVE[-1].record(module, probs)
    return output.transpose(1, 2).contiguous(), probs


@contextmanager
def frozen(model: Any) -> Iterator[Any]:
    """Evaluation mode with no parameter gradients for the duration (restored on exit): methods that
    differentiate with respect to inputs only, or not at all."""
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(training)


def language_layer_count(model: Any) -> int:
    config = getattr(model.config, "text_config", model.config)
    return int(config.num_hidden_layers)


class Capture:
    """Context manager that captures the language model's attention for one explanation.

    On exit (also after an exception) it restores the model's attention implementation,
    parameter flags and train/eval mode, removes its hooks and unregisters its attention function.
    """

    def __init__(self, model: Any, text_config_key: str, reduce_layer: Reducer, layers: list[int] | None = None,
                 bidirectional: torch.Tensor | None = None, cross_layers: Sequence[int] = (),
                 reduce_cross: Reducer | None = None) -> None:
        self.model = model
        self.text_config_key = text_config_key
        self.recorder = _Recorder(reduce_layer, None if layers is None else set(layers), bidirectional,
                                  frozenset(cross_layers), reduce_cross)
        self.layers = layers
        self._saved: dict[str, Any] = {}
        self._hook = None

    def __enter__(self) -> "Capture":
        AttentionInterface.register(CAPTURE_NAME, capture_attention)
        AttentionMaskInterface.register(CAPTURE_NAME, eager_mask)
        model = self.model
        sub = getattr(model.config, self.text_config_key, None)
        self._saved = {
            "impl": (sub if sub is not None else model.config)._attn_implementation,
            "training": model.training,
            "grad": [p.requires_grad for p in model.parameters()],
        }
        _ACTIVE.append(self.recorder)
        try:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            # Gradients must reach the attention even when no parameter requires them.
            self._hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))
            model.set_attn_implementation(self._impl(CAPTURE_NAME))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _impl(self, name: str) -> Any:
        return {self.text_config_key: name} if getattr(self.model.config, self.text_config_key, None) is not None else name

    def __exit__(self, *exc: Any) -> None:
        model = self.model
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._saved:
            if self._saved["impl"] != CAPTURE_NAME:
                model.set_attn_implementation(self._impl(self._saved["impl"]))
            for p, flag in zip(model.parameters(), self._saved["grad"]):
                p.requires_grad_(flag)
            model.train(self._saved["training"])
            self._saved = {}
        if self.recorder in _ACTIVE:
            _ACTIVE.remove(self.recorder)
        if not _ACTIVE:
            AttentionInterface._global_mapping.pop(CAPTURE_NAME, None)
            ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.pop(CAPTURE_NAME, None)
        self.recorder.attn.clear()

    def run(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout, gradients: str = "per_token") -> Trace:
        """One forward pass over prompt + answer, then the backward passes `gradients` asks for:
        "per_token" (one per answer token: exact), "sum" (one for the sum of the answer logits)
        or "none" (attention only)."""
        if gradients not in GRADIENT_MODES:
            raise ValueError(f"gradients must be one of {GRADIENT_MODES}, got {gradients!r}")
        rec = self.recorder
        if rec.bidirectional is not None:
            _check_prefix_only(rec.bidirectional, layout)
        with torch.enable_grad():
            logits = self.model(**inputs, use_cache=False).logits[0]
        if not rec.attn:
            raise CaptureError(
                f"no language-model attention was captured from {type(self.model).__name__}: its language model "
                "does not dispatch through transformers' attention interface")
        wanted = sorted(rec.attn) if self.layers is None else [l for l in self.layers if l in rec.attn]
        if not wanted:
            raise CaptureError(f"none of the requested layers {self.layers} were captured")
        ids = inputs["input_ids"][0]
        rows = [logits[pos - 1] for pos in layout.answer]
        targets = [int(ids[pos]) for pos in layout.answer]
        tokens = [TokenTrace(pos, y, float(torch.softmax(row.detach().float(), -1)[y]), float(row[y].detach()))
                  for pos, row, y in zip(layout.answer, rows, targets)]
        shared: dict[int, dict[str, torch.Tensor]] = {}
        last = layout.answer[-1] - 1
        if gradients == "per_token":
            for i, token in enumerate(tokens):
                token.layers = self._backward(rows[i][targets[i]], token.query, wanted[0], i < len(tokens) - 1)
        elif gradients == "sum":
            total = torch.stack([row[y] for row, y in zip(rows, targets)]).sum()
            shared = self._backward(total, last, wanted[0], False)
        else:
            shared = {l: rec.reduce(l, rec.attn[l][0].detach(), None, last) for l in wanted}
        n_heads = next(iter(rec.attn.values())).shape[1]
        return Trace(tokens, language_layer_count(self.model), n_heads, shared, wanted,
                     [l for l in wanted if l in rec.cross_layers])

    def _backward(self, target: torch.Tensor, query: int, lowest: int, retain: bool) -> dict[int, dict[str, torch.Tensor]]:
        rec = self.recorder
        rec.query, rec.reduced = query, {}
        # The lowest wanted layer is the only input: autograd stops there, and the hooks of the
        # layers above reduce their gradients on the way down.
        torch.autograd.grad(target, rec.attn[lowest], retain_graph=retain)
        reduced, rec.query, rec.reduced = rec.reduced, None, {}
        return reduced
