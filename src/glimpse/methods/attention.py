"""Attention baselines: raw attention, attention rollout, gradient-weighted attention (Grad-CAM on
attention, also registered as `agcam`) and Chefer et al.'s generic attention explainability.

Conventions shared with GLIMPSE: every answer token t is read at its query row t-1 (the position
whose output is the token's logit); attention is averaged over heads; maps are the rows' values
at the image positions V and the question positions P; holistic maps are the mean over answer
tokens (beta = 1/T). "All layers" means the layers that computed attention (`Trace.layers`: in a
hybrid model the linear-attention layers have none). `exclude_sinks` is handled once, in
`AttentionMethod`.

A structural fact worth knowing when reading `exclude_sinks`: the sink keys precede every image
and question token, and causal attention never lets a sink attend to a later position, so paths
through a sink never come back to V or P. Methods without row renormalisation (raw_attention,
gradcam_attn, gae) therefore give the same V and P scores with and without the option; it
matters where rows are renormalised (rollout, glimpse, glimpse_fast), where the mass the sinks
held is redistributed over the other keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..capture import Trace
from ..errors import OptionError
from ..layout import SequenceLayout
from .base import SINKS_HELP, AttentionMethod, MethodResult, result_from_tokens


class _HeadMeanAttention(AttentionMethod):
    """Keeps each layer's head-averaged attention up to the last query row (no gradients)."""

    gradients = "none"
    explains = "attention"

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        return {"attn": head_mean(attn, query)}

    def matrices(self, trace: Trace) -> list[torch.Tensor]:
        return [trace.shared[layer]["attn"] for layer in trace.layers]


class RawAttention(_HeadMeanAttention):
    """Attention of each answer token's query row t-1, averaged over heads, of one layer (`layer`,
    0-based, negative counts from the last) or averaged over all layers (`layer=None`)."""

    name = "raw_attention"
    summary = "Raw attention from each answer token's query row, mean over heads, one layer or the mean over layers"
    paper = "Vaswani et al. 2017, Attention Is All You Need (NeurIPS 2017, arXiv 1706.03762); the raw-attention baseline"
    options = {"layer": "the layer to read (0-based, negative counts from the last); None: the mean over all layers",
               "exclude_sinks": SINKS_HELP}

    def __init__(self, layer: int | None = None, exclude_sinks: bool = False) -> None:
        super().__init__(exclude_sinks)
        self.layer = _check_layer(layer, allow_none=True)

    def layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers)) if self.layer is None else [resolve_layer(self.layer, n_layers)]

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        mean = torch.stack(self.matrices(trace)).mean(0)
        return token_rows_result(list(mean[layout.queries]), layout, trace.layers)


class Rollout(_HeadMeanAttention):
    """Attention rollout: R = A'_L ... A'_1 over all language-model layers, with
    A'_l = rows-renormalised (0.5 mean_h A_l + 0.5 I); answer token t reads row t-1 of R."""

    name = "rollout"
    summary = "Attention rollout over all layers with the residual identity (0.5 A + 0.5 I, rows renormalised)"
    paper = "Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers (ACL 2020, arXiv 2005.00928)"

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        mixed = [with_residual(a) for a in self.matrices(trace)]
        rows = carry_rows(mixed, layout.queries, lambda rows, m: rows @ m)
        return token_rows_result(list(rows), layout, trace.layers)


class GradCamAttention(AttentionMethod):
    """Grad-CAM on one layer's attention (default the last): mean over heads of ReLU(dz_t/dA * A)
    at answer token t's query row t-1, with z_t the raw logit of y_t (one backward per token)."""

    name = "gradcam_attn"
    summary = "Grad-CAM on attention: mean over heads of ReLU(gradient x attention) of one layer (default the last)"
    paper = ("Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based "
             "Localization (ICCV 2017, arXiv 1610.02391), applied to attention maps")
    options = {"layer": "the layer whose attention is weighted (0-based, negative counts from the last)",
               "exclude_sinks": SINKS_HELP}

    def __init__(self, layer: int = -1, exclude_sinks: bool = False) -> None:
        super().__init__(exclude_sinks)
        self.layer = _check_layer(layer, allow_none=False)

    def layers(self, n_layers: int) -> list[int]:
        return [resolve_layer(self.layer, n_layers)]

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        row = slice(query, query + 1)
        return {"row": positive_grad_attention(attn[:, row, : query + 1], grad[:, row, : query + 1])[0]}

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        layer = trace.layers[0]
        return token_rows_result([t.layers[layer]["row"] for t in trace.tokens], layout, [layer])


class AttentionGuidedCam(GradCamAttention):
    """`gradcam_attn` under the name used by AGCAM-style VLM tools. The same maths: post-softmax
    attention of one layer weighted by ReLU of its gradient, averaged over heads; not the full
    AGCAM of the paper (sigmoid-normalised attention scores summed over all layers)."""

    name = "agcam"
    summary = "Same as gradcam_attn (AGCAM-style name): mean over heads of ReLU(gradient x attention) of one layer"
    paper = ("Leem & Seo 2024, Attention Guided CAM: Visual Explanations of Vision Transformer Guided by "
             "Self-Attention (AAAI 2024, arXiv 2402.04563); computed as gradcam_attn")


class GenericAttention(AttentionMethod):
    """Chefer et al.'s rule for self-attention: R = I; for each layer l from first to last:
    R <- R + mean_h(ReLU(dz_t/dA_l * A_l)) R; answer token t reads row t-1 (one backward per token)."""

    name = "gae"
    summary = "Generic attention explainability: R <- R + mean_h ReLU(gradient x attention) R from first to last layer"
    paper = ("Chefer, Gur & Wolf 2021, Generic Attention-model Explainability for Interpreting Bi-Modal and "
             "Encoder-Decoder Transformers (ICCV 2021, arXiv 2103.15679)")

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        keep = slice(0, query + 1)
        return {"relevance": positive_grad_attention(attn[:, keep, keep], grad[:, keep, keep])}

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        layers = trace.layers
        rows = [carry_rows([t.layers[l]["relevance"] for l in layers], [t.query], lambda r, m: r + r @ m)[0]
                for t in trace.tokens]
        return token_rows_result(rows, layout, layers)


# --- shared maths ------------------------------------------------------------------------------

def head_mean(attn: torch.Tensor, query: int) -> torch.Tensor:
    """Mean over heads of the attention up to row and column `query` (later keys are causal zeros)."""
    return attn[:, : query + 1, : query + 1].float().mean(0)


def positive_grad_attention(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """mean_h ReLU(grad * A) for [heads, rows, keys] inputs."""
    return (grad.float() * attn.float()).clamp(min=0).mean(0)


def with_residual(attn: torch.Tensor) -> torch.Tensor:
    """0.5 A + 0.5 I with every row divided by its sum (rows of a masked A may sum to less than 1)."""
    mixed = 0.5 * attn + 0.5 * torch.eye(attn.shape[0], dtype=attn.dtype, device=attn.device)
    return mixed / mixed.sum(1, keepdim=True)


def carry_rows(matrices: list[torch.Tensor], queries: list[int],
               step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Rows `queries` of a product accumulated over layers, without forming the product.

    `matrices` are in layer order (first to last) and the product is built from the last layer
    down (R = M_L ... M_1 for rollout, R = (I + M_L) ... (I + M_1) for Chefer's rule), so the rows
    start as one-hot vectors and `step(rows, M_l)` applies the layers from the last to the first.
    """
    size = matrices[0].shape[0]
    rows = torch.zeros(len(queries), size, dtype=matrices[0].dtype, device=matrices[0].device)
    rows[torch.arange(len(queries)), torch.tensor(queries)] = 1.0
    for matrix in reversed(matrices):
        rows = step(rows, matrix)
    return rows


def token_rows_result(rows: list[torch.Tensor], layout: SequenceLayout, layers: list[int]) -> MethodResult:
    """Each answer token's row read at V and P; holistic maps are the mean over answer tokens."""
    visual = torch.tensor(layout.image_positions, dtype=torch.long)
    prompt = torch.tensor(layout.prompt, dtype=torch.long)
    token_visual = torch.stack([row.cpu()[visual] for row in rows])
    token_prompt = torch.stack([row.cpu()[prompt] for row in rows])
    uniform = torch.full((len(rows),), 1.0 / len(rows))
    return result_from_tokens(token_visual, token_prompt, layers, uniform)


def resolve_layer(layer: int, n_layers: int) -> int:
    if not -n_layers <= layer < n_layers:
        raise OptionError(f"layer {layer} is out of range for a language model with {n_layers} layers")
    return layer % n_layers


def _check_layer(layer: Any, allow_none: bool) -> int | None:
    if layer is None and allow_none:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise OptionError(f"layer must be an integer{' or None' if allow_none else ''}, got {layer!r}")
    return layer
