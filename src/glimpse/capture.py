"""Teacher-forced capture of language-model attention and its per-token gradients.

Each `Capture` swaps the language model's attention for an attention function of its own (a
closure over that capture's recorder), registered with transformers' attention interfaces under a
name unique to the capture and removed on exit. Nothing is shared between captures, so captures of
different models on different threads never record into each other. The function computes the
attention probabilities explicitly (with an explicit causal and padding mask) whatever
implementation the model was loaded with, while the vision tower keeps its own attention. During
the backward pass of each answer token, a tensor hook hands every layer's attention and gradient to
the method's `reduce_layer` as soon as the gradient reaches that layer, so only the reduced form
outlives the layer's backward step.

Block-wise capture (`blockwise=True`) keeps the model's own attention kernel (sdpa) instead: the
function records each layer's Q, K, V and mask (`blocks.LayerAttention`, no copy: autograd holds
them anyway) and its output; each backward pass asks autograd for the gradient of every wanted
layer's output, dO (for several answer tokens at once with `token_batch`: vmap-batched
vector-Jacobian products), and the reducer gets the layer's inputs with the token's rows of dO, from
which it recomputes whatever rows of A and dz/dA = dO V^T it needs, a block at a time. Causality is
then checked once per mask rather than on probabilities. Memory grows with N, not N^2.

Cross-attention layers (declared by the adapter: Mllama's, where text queries attend to vision
tokens) are recorded and reduced apart from self-attention: their keys are not sequence positions,
so there is no causal structure to impose or check; the mask is the one the model passes (Mllama's
cross_attention_mask with fully masked text rows made uniform, exactly as eager attention applies
it), and their gradient-weighted attention goes to the method's own cross-attention reducer.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import progress
from .blocks import LayerAttention, attends
from .errors import CaptureError, FallbackWarning, note
from .layout import SequenceLayout
from .resources import is_out_of_memory

# Every capture's attention implementation is named CAPTURE_PREFIX + "_" + a fresh uuid.
CAPTURE_PREFIX = "glimpse_capture"
# Explicit matrices: (attention [heads, N, N], its gradient or None, query row) -> what a method keeps.
# For a cross-attention layer the attention and gradient are [heads, N, K] (K vision keys).
Reducer = Callable[[torch.Tensor, "torch.Tensor | None", int], dict[str, torch.Tensor]]
# Block-wise: (the layer's LayerAttention with this token's grad_output, query row) -> what a method keeps.
BlockReducer = Callable[[LayerAttention, int], dict[str, Any]]


@dataclass
class TokenTrace:
    """What capture saw for one answer token: its query row, probability and reduced layers."""

    position: int
    token_id: int
    prob: float
    layers: dict[int, dict[str, Any]] = field(default_factory=dict)
    # What the method kept of this token right after its backward pass, when it reduces tokens one by one.
    summary: dict[str, Any] = field(default_factory=dict)

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
    shared: dict[int, dict[str, Any]] = field(default_factory=dict)
    layers: list[int] = field(default_factory=list)
    # The entries of `layers` that are cross-attention layers (reduced by the cross-attention reducer).
    cross_layers: list[int] = field(default_factory=list)
    # The fallbacks capture took (already warned about).
    notes: list[str] = field(default_factory=list)


GRADIENT_MODES = ("per_token", "sum", "none")


class _Recorder:
    """Holds each layer's attention during one capture and reduces its gradient on arrival."""

    def __init__(self, reduce_layer: Reducer | BlockReducer, layers: set[int] | None, bidirectional: torch.Tensor | None,
                 cross_layers: frozenset[int] = frozenset(), reduce_cross: Reducer | None = None,
                 blockwise: bool = False) -> None:
        self.reduce_layer = reduce_layer
        self.cross_layers = cross_layers
        self.reduce_cross = reduce_cross
        self.wanted = layers
        self.bidirectional = bidirectional
        self.blockwise = blockwise
        # Explicit probabilities (their gradients hooked), or block-wise the attention outputs (their gradients
        # asked of autograd).
        self.attn: dict[int, torch.Tensor] = {}
        self.inputs: dict[int, LayerAttention] = {}
        self.checked_masks: dict[int, torch.Tensor] = {}
        self.query: int | None = None
        self.reduced: dict[int, dict[str, Any]] = {}

    def layer_of(self, module: Any) -> int:
        layer = getattr(module, "layer_idx", None)
        return len(self.attn) if layer is None else int(layer)

    def record(self, module: Any, probs: torch.Tensor) -> None:
        layer = self.layer_of(module)
        if layer in self.cross_layers:
            self._check_cross(layer)
        else:
            self._check_causal(layer, probs)
        self.attn[layer] = probs
        if probs.requires_grad and (self.wanted is None or layer in self.wanted):
            probs.register_hook(lambda grad, layer=layer: self._on_grad(layer, grad))

    def record_blocks(self, module: Any, inputs: LayerAttention, output: torch.Tensor) -> None:
        """Block-wise capture: the layer's inputs are kept (autograd holds them anyway) and so is
        its output [1, N, H, D], whose gradient `Capture` asks autograd for."""
        layer = self.layer_of(module)
        if layer in self.cross_layers:
            self._check_cross(layer)
        else:
            self._check_mask(layer, inputs)
        self.inputs[layer] = inputs
        self.attn[layer] = output

    def _check_cross(self, layer: int) -> None:
        # Vision keys: nothing is "future" to a text query. Fail here, before any backward pass,
        # if the method cannot reduce such a layer.
        if self.reduce_cross is None and not self.blockwise and (self.wanted is None or layer in self.wanted):
            raise CaptureError(f"language-model layer {layer} is a cross-attention layer, which this method "
                               "cannot explain")

    def _check_mask(self, layer: int, inputs: LayerAttention) -> None:
        """The block-wise check of causality, once per mask (the layers share one): no allowed key
        after its query except the adapter's declared bidirectional pairs."""
        mask = inputs.mask
        if mask is None:
            if not inputs.causal:
                raise CaptureError(f"language-model layer {layer} attends to future tokens: it has no attention mask "
                                   "and is not causal, so the explanation would be wrong")
            return
        if id(mask) in self.checked_masks:
            return
        self._refuse_future(layer, attends(mask).any(0))
        self.checked_masks[id(mask)] = mask  # kept so that the id is not reused by another mask

    def _check_causal(self, layer: int, probs: torch.Tensor) -> None:
        self._refuse_future(layer, (probs.detach().abs() > 1e-6).flatten(0, -3).any(0))

    def _refuse_future(self, layer: int, allowed: torch.Tensor) -> None:
        """Refuse attention ([queries, keys], True where some head attends) to any later key but
        the adapter's declared bidirectional pairs."""
        future = torch.triu(allowed, diagonal=1)
        if self.bidirectional is not None:
            future &= ~self.bidirectional.to(future.device)
        if bool(future.any()):
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


AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def attention_for(recorder: _Recorder, owned: frozenset[int]) -> AttentionFunction:
    """Attention with explicit probabilities, recorded into `recorder` (dropout is never applied).
    `owned` holds the ids of the captured model's modules: the function is registered globally under
    its own name, and a call from any other model's module is refused rather than recorded."""

    def capture_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                          **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if id(module) not in owned:
            raise CaptureError(f"glimpse's capture attention was called by a {type(module).__name__} outside the "
                               "model being captured")
        probs = _probabilities(module, query, key, attention_mask, scaling, kwargs.get("softcap"),
                               recorder.is_cross(module))
        output = torch.matmul(probs.to(value.dtype), _repeat_kv(value, query.shape[1] // value.shape[1]))
        recorder.record(module, probs)
        return output.transpose(1, 2).contiguous(), probs

    return capture_attention


def blockwise_attention_for(recorder: _Recorder, owned: frozenset[int], zero_keys: torch.Tensor | None) -> AttentionFunction:
    """The model's own sdpa attention, its inputs recorded into `recorder` for block-wise
    recomputation (nothing N x N is kept). `zero_keys` (exclude_sinks) applies to self-attention."""

    def blockwise_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
        if id(module) not in owned:
            raise CaptureError(f"glimpse's capture attention was called by a {type(module).__name__} outside the "
                               "model being captured")
        if kwargs.get("softcap") is not None:
            raise CaptureError(f"{type(module).__name__} caps its attention logits (softcap), which sdpa cannot run: "
                               "explain it with path='full_matrix'")
        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=scaling,
                                           **kwargs)
        cross = recorder.is_cross(module)
        mask = None if attention_mask is None else attention_mask[0, :, :, : key.shape[-2]].detach()
        inputs = LayerAttention(query[0].detach(), key[0].detach(), value[0].detach(), mask,
                                query.shape[-1] ** -0.5 if scaling is None else scaling,
                                causal=not cross and getattr(module, "is_causal", True),
                                zero_keys=None if cross else zero_keys)
        recorder.record_blocks(module, inputs, output)
        return output, None

    return blockwise_attention


def _probabilities(module: Any, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                   scaling: float | None, softcap: float | None, cross: bool) -> torch.Tensor:
    key = _repeat_kv(key, query.shape[1] // key.shape[1])
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)).float() * scaling
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        # A cross-attention layer without a mask attends to every vision key, as eager would.
        if getattr(module, "is_causal", True) and not cross:
            scores = scores + _causal_mask(scores.shape[-2], scores.shape[-1], scores.dtype, scores.device)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., : key.shape[-2]], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., : key.shape[-2]].float()
    return torch.softmax(scores, dim=-1)


@contextmanager
def registered(name: str, function: AttentionFunction, mask_function: Callable[..., Any]) -> Iterator[str]:
    """`function` (with `mask_function`: eager's or sdpa's mask) is the attention implementation
    `name` for the duration.

    The attention function goes into the shared `ALL_ATTENTION_FUNCTIONS` instance through its
    public mapping interface (item assignment and `del`): that instance is what
    `set_attn_implementation` validates names against and what attention modules look functions up
    in at forward time. (`AttentionInterface.register` would write the class-level mapping instead,
    which has no public removal.) A model file declaring its own `AttentionInterface()` would not
    see it; no vision-language family glimpse supports does.

    The mask function must go into the class-level mapping: mask creation looks it up by the
    attention implementation's name but first checks that name against
    `AttentionMaskInterface._global_mapping` itself (skipping the mask when absent), so only the
    public classmethod `register` works. transformers offers no public removal from that mapping
    (`del` on an instance only drops instance-local entries), so the exit pops exactly the one key
    this capture added: the narrowest operation that undoes `register`.
    """
    ALL_ATTENTION_FUNCTIONS[name] = function
    try:
        AttentionMaskInterface.register(name, mask_function)
        try:
            yield name
        finally:
            AttentionMaskInterface._global_mapping.pop(name, None)
    finally:
        del ALL_ATTENTION_FUNCTIONS[name]


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


def logits_kwargs(model: Any, n_answer: int) -> dict[str, int]:
    """Forward arguments that keep only the last n_answer + 1 positions' logits (the answer's query
    rows and the last position) where the model supports it: the other rows are never read, and
    at N positions x a real vocabulary they are the largest tensor of the forward pass."""
    accepted = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": n_answer + 1} if accepted else {}


def language_layer_count(model: Any) -> int:
    config = getattr(model.config, "text_config", model.config)
    return int(config.num_hidden_layers)


class Capture:
    """Context manager that captures the language model's attention for one explanation.

    On exit (also after an exception) it restores the model's attention implementation,
    parameter flags and train/eval mode, removes its hooks and unregisters its attention function.
    """

    def __init__(self, model: Any, text_config_key: str, reduce_layer: Reducer | BlockReducer,
                 layers: list[int] | None = None, bidirectional: torch.Tensor | None = None,
                 cross_layers: Sequence[int] = (), reduce_cross: Reducer | None = None, blockwise: bool = False,
                 zero_keys: Sequence[int] = ()) -> None:
        self.model = model
        self.text_config_key = text_config_key
        self.recorder = _Recorder(reduce_layer, None if layers is None else set(layers), bidirectional,
                                  frozenset(cross_layers), reduce_cross, blockwise)
        self.zero_keys = torch.tensor(list(zero_keys), dtype=torch.long, device=model.device) if zero_keys else None
        self.layers = layers
        self.name = f"{CAPTURE_PREFIX}_{uuid.uuid4().hex}"
        self._stack: ExitStack | None = None

    def __enter__(self) -> Capture:
        if self._stack is not None:
            raise RuntimeError("a Capture cannot be entered twice")
        stack = self._stack = ExitStack()
        try:
            self._enter(stack)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _enter(self, stack: ExitStack) -> None:
        # Undone in reverse on exit: implementation, hook, flags and mode, registration, recorded attention.
        model = self.model
        rec = self.recorder
        stack.callback(rec.attn.clear)
        stack.callback(rec.inputs.clear)
        stack.callback(rec.checked_masks.clear)
        owned = frozenset(id(module) for module in model.modules())
        if rec.blockwise:
            stack.enter_context(registered(self.name, blockwise_attention_for(rec, owned, self.zero_keys), sdpa_mask))
        else:
            stack.enter_context(registered(self.name, attention_for(rec, owned), eager_mask))
        stack.enter_context(frozen(model))
        # Gradients must reach the attention even when no parameter requires them.
        hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))
        stack.callback(hook.remove)
        # The restore is queued first: a switch that fails half-way (one sub-model set, another not) is undone too.
        stack.callback(model.set_attn_implementation, self._impl(self._text_config()._attn_implementation))
        model.set_attn_implementation(self._impl(self.name))

    def _text_config(self) -> Any:
        sub = getattr(self.model.config, self.text_config_key, None)
        return sub if sub is not None else self.model.config

    def _impl(self, name: str) -> Any:
        return {self.text_config_key: name} if getattr(self.model.config, self.text_config_key, None) is not None else name

    def __exit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def run(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout, gradients: str = "per_token",
            on_token: Callable[[TokenTrace, list[int]], None] | None = None, token_batch: int = 1) -> Trace:
        """One forward pass over prompt + answer, then the backward passes `gradients` asks for:
        "per_token" (one per answer token: exact), "sum" (one for the sum of the answer logits)
        or "none" (attention only). With per-token gradients, `on_token(token, captured layers)` runs
        right after each token's backward pass. Block-wise, `token_batch` answer tokens share one
        batched backward pass (a vector-Jacobian product per token, the weights read once)."""
        if gradients not in GRADIENT_MODES:
            raise ValueError(f"gradients must be one of {GRADIENT_MODES}, got {gradients!r}")
        rec = self.recorder
        if rec.blockwise and gradients == "none":
            raise ValueError("block-wise capture recomputes attention from its gradients: it needs gradients")
        if rec.bidirectional is not None:
            _check_prefix_only(rec.bidirectional, layout)
        with torch.enable_grad():
            logits = self.model(**inputs, use_cache=False, **logits_kwargs(self.model, len(layout.answer))).logits[0]
        if not rec.attn:
            raise CaptureError(
                f"no language-model attention was captured from {type(self.model).__name__}: its language model "
                "does not dispatch through transformers' attention interface")
        wanted = sorted(rec.attn) if self.layers is None else [l for l in self.layers if l in rec.attn]
        if not wanted:
            raise CaptureError(f"none of the requested layers {self.layers} were captured")
        ids = inputs["input_ids"][0]
        first_row = len(ids) - logits.shape[0]  # where the model kept the last rows' logits only
        rows = [logits[pos - 1 - first_row] for pos in layout.answer]
        targets = [int(ids[pos]) for pos in layout.answer]
        tokens = [TokenTrace(pos, y, float(torch.softmax(row.detach().float(), -1)[y]))
                  for pos, row, y in zip(layout.answer, rows, targets)]
        shared: dict[int, dict[str, torch.Tensor]] = {}
        last = layout.answer[-1] - 1
        notes: list[str] = []
        if rec.blockwise:
            scores = [row[y] for row, y in zip(rows, targets)]
            shared = self._run_blocks(tokens, scores, wanted, gradients, on_token, token_batch, notes)
        elif gradients == "per_token":
            with progress.steps(len(tokens), "backward passes") as bar:
                for i, token in enumerate(tokens):
                    token.layers = self._backward(rows[i][targets[i]], token.query, wanted[0], i < len(tokens) - 1)
                    if on_token is not None:
                        on_token(token, wanted)
                    bar.update(1)
        elif gradients == "sum":
            total = torch.stack([row[y] for row, y in zip(rows, targets)]).sum()
            shared = self._backward(total, last, wanted[0], False)
        else:
            shared = {l: rec.reduce(l, rec.attn[l][0].detach(), None, last) for l in wanted}
        return Trace(tokens, language_layer_count(self.model), shared, wanted,
                     [l for l in wanted if l in rec.cross_layers], notes)

    def _run_blocks(self, tokens: list[TokenTrace], scores: list[torch.Tensor], wanted: list[int], gradients: str,
                    on_token: Callable[[TokenTrace, list[int]], None] | None, token_batch: int,
                    notes: list[str]) -> dict[int, dict[str, Any]]:
        """Block-wise backward passes: autograd gives each wanted layer's output gradient dO, and the
        reducer gets the layer's inputs with the token's rows of it."""
        if gradients == "sum":
            grads = self._output_grads(torch.stack(scores).sum()[None], wanted, False, notes)
            return self._reduce_blocks(wanted, grads, 0, tokens[-1].query)
        with progress.steps(len(tokens), "backward passes") as bar:
            for start in range(0, len(tokens), token_batch):
                chunk = range(start, min(start + token_batch, len(tokens)))
                grads = self._output_grads(torch.stack([scores[i] for i in chunk]), wanted, chunk.stop < len(tokens), notes)
                for b, i in enumerate(chunk):
                    tokens[i].layers = self._reduce_blocks(wanted, grads, b, tokens[i].query)
                    if on_token is not None:
                        on_token(tokens[i], wanted)
                    bar.update(1)
        return {}

    def _output_grads(self, targets: torch.Tensor, wanted: list[int], retain: bool,
                      notes: list[str]) -> list[torch.Tensor]:
        """d targets[b] / d(output of layer l), stacked over b: [B, 1, N, H, D] for each wanted layer."""
        outputs = [self.recorder.attn[l] for l in wanted]
        if len(targets) == 1:
            return [g[None] for g in torch.autograd.grad(targets[0], outputs, retain_graph=retain,
                                                         materialize_grads=True)]
        try:
            # The graph is kept even after the last chunk, so that a failed batched pass can be redone token by token.
            return list(torch.autograd.grad(targets, outputs, torch.eye(len(targets), device=targets.device),
                                            retain_graph=True, is_grads_batched=True, materialize_grads=True))
        except RuntimeError as exc:  # an operation of this model without a batching rule for vmap
            if is_out_of_memory(exc):
                raise
            note(notes, f"the batched backward pass failed on this model ({str(exc).splitlines()[0][:200]}); "
                        "answer tokens were back-propagated one at a time (same result, slower)", FallbackWarning)
            per_token = [torch.autograd.grad(t, outputs, retain_graph=retain or i < len(targets) - 1,
                                             materialize_grads=True) for i, t in enumerate(targets)]
            return [torch.stack([grads[k] for grads in per_token]) for k in range(len(outputs))]

    def _reduce_blocks(self, wanted: list[int], grads: list[torch.Tensor], b: int, query: int) -> dict[int, dict[str, Any]]:
        rec = self.recorder
        return {l: rec.reduce_layer(replace(rec.inputs[l], grad_output=g[b, 0, : query + 1].detach().transpose(0, 1)),
                                    query)
                for l, g in zip(wanted, grads)}

    def _backward(self, target: torch.Tensor, query: int, lowest: int, retain: bool) -> dict[int, dict[str, torch.Tensor]]:
        rec = self.recorder
        rec.query, rec.reduced = query, {}
        # The lowest wanted layer is the only input: autograd stops there, and the hooks of the
        # layers above reduce their gradients on the way down.
        torch.autograd.grad(target, rec.attn[lowest], retain_graph=retain)
        reduced, rec.query, rec.reduced = rec.reduced, None, {}
        return reduced
