"""GLIMPSE Steps 1-3 on attention recomputed in row blocks (`blocks.LayerAttention`): the same
equations as `glimpse.fuse_heads` and `glimpse.propagate`, without an N x N matrix.

The head weights normalise over all of a layer's rows, so each layer is gone through twice: once
for the per-head sums and the layer evidence (`layer_pass`), once for the propagated rows times the
fused matrix (`fused_product`). The second pass reuses the first's gradient-weighted blocks as far
as `CACHE_ELEMENTS` holds them and recomputes the rest.

alpha^l = w_l / Z normalises over all layers (w_l = evidence x depth prior, Z = sum_l w_l), yet the
row is carried from the last layer down. `propagate_streamed` therefore carries it as a polynomial
in 1/Z: r = sum_k c_k Z^-k, each step r <- r + (w_l / 2Z) r E_l adding (w_l / 2) c_{k-1} E_l to
c_k, exactly. The c_k are kept divided by M^k, M the sum of the w_l seen so far (Z at the end), so
they stay bounded; all terms are non-negative, so nothing cancels. One layer's blocks are alive at a
time and no layer is recomputed after the token's backward pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..blocks import LayerAttention

EPS = 1e-12
# Gradient-weighted attention elements (float32) one layer's first pass keeps for its second (256 MB).
CACHE_ELEMENTS = 1 << 26

Cached = list[tuple[slice, torch.Tensor | None]]  # None: a block without gradient


def layer_pass(attention: LayerAttention, query: int, head_lambda: float,
               cache_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Cached]:
    """Step 2's head weights and Step 3's layer evidence ||sum_h g_h||_1 over rows 0..query (all
    key columns: masked ones still carry gradient into the head sums), and the first row blocks of
    ReLU(g) A ([H, b, k]) within `cache_elements`."""
    heads, device = attention.n_heads, attention.query.device
    coherent, positive = torch.zeros(heads, device=device), torch.zeros(heads, device=device)
    evidence = torch.zeros((), device=device)
    room = CACHE_ELEMENTS if cache_elements is None else cache_elements
    cached: Cached = []
    caching = True  # the cache holds the first blocks only, the second pass recomputes from where it stops
    for rows, attn, grad in attention.row_blocks(query + 1, _fused_keys(attention, query), attention.n_keys):
        if grad is None:  # no gradient on these rows: they add nothing, and ReLU(g) A is zero
            if caching:
                cached.append((rows, None))
            continue
        evidence += grad.sum(0).abs().sum()
        relu_grad = grad.clamp_(min=0)  # in place: the block's gradient is not needed any more
        positive += relu_grad.sum((1, 2))
        # A is zero past the block's last key.
        weighted = relu_grad[:, :, : attn.shape[-1]] * attn
        coherent += weighted.sum((1, 2))
        caching = caching and weighted.numel() <= room
        if caching:
            cached.append((rows, weighted))
            room -= weighted.numel()
    head_weights = torch.softmax(coherent / positive.clamp(min=EPS) / head_lambda, dim=0)
    return head_weights, evidence, cached


def fused_product(rows: torch.Tensor, attention: LayerAttention, head_weights: torch.Tensor, query: int,
                  cached: Cached = ()) -> torch.Tensor:
    """rows [m, query + 1] @ E, E the row-normalised sum_h w_h ReLU(g_h) A_h of rows 0..query
    ([query + 1, query + 1] for causal self-attention, [query + 1, K] for cross-attention)."""
    keys = _fused_keys(attention, query)
    out = torch.zeros(rows.shape[0], keys, device=rows.device)
    weights = head_weights.to(rows.device)
    for block, weighted in _weighted_blocks(attention, query, keys, cached):
        carried = rows[:, block]
        # Nothing to add: rows without gradient (weighted None), or none carried (r is one-hot in the last layer).
        if weighted is None or not bool(carried.any()):
            continue
        fused = torch.einsum("h,hbk->bk", weights, weighted)
        sums = fused.sum(1)
        scale = torch.where(sums > 0, 1.0 / sums.clamp(min=EPS), torch.zeros_like(sums))
        out[:, : fused.shape[1]] += (carried * scale) @ fused
    return out


def _weighted_blocks(attention: LayerAttention, query: int, keys: int,
                     cached: Cached) -> Iterator[tuple[slice, torch.Tensor | None]]:
    yield from cached
    start = cached[-1][0].stop if cached else 0
    for block, attn, grad in attention.row_blocks(query + 1, keys, start=start):
        yield block, None if grad is None else (grad * attn).clamp_(min=0)


def propagate_streamed(attentions: dict[int, LayerAttention], layers: list[int], query: int, head_lambda: float,
                       prior: torch.Tensor, cross: frozenset[int], starts: list[int] | None = None) -> dict[str, Any]:
    """Steps 1-3 in one top-down sweep (see the module's docstring) over the layers' rows 0..query,
    carrying the rows that start one-hot at `starts` (default: [query], one answer token): the
    propagated sequence rows [m, query + 1], the vision-key rows [m, K] (None without
    cross-attention layers), the head weights [layers, heads] and the evidence [layers]. With no
    evidence at all (Z = 0) alpha is the depth prior, which the sweep cannot carry: "rows" is None
    then and the caller propagates with `fused_product` (the layers' inputs are still there)."""
    device = attentions[layers[-1]].query.device
    n, starts = len(layers), [query] if starts is None else starts
    m = len(starts)
    seq = torch.zeros(n + 1, m, query + 1, device=device)
    seq[0, torch.arange(m), torch.tensor(starts)] = 1.0
    keys = torch.zeros(n + 1, m, attentions[min(cross)].n_keys, device=device) if cross else None
    total, steps = 0.0, 0
    heads, evidence = [None] * n, [None] * n
    for i in reversed(range(n)):
        layer = layers[i]
        head_weights, layer_evidence, cached = layer_pass(attentions[layer], query, head_lambda)
        heads[i], evidence[i] = head_weights, layer_evidence
        weight = float(layer_evidence) * float(prior[i])
        if weight == 0.0:
            continue
        grown = total + weight
        scale = torch.tensor([(total / grown) ** k for k in range(n + 1)], device=device)[:, None, None]
        seq *= scale
        if keys is not None:
            keys *= scale
        carried = seq[: steps + 1].reshape((steps + 1) * m, query + 1)
        step = fused_product(carried, attentions[layer], head_weights, query, cached) * (0.5 * weight / grown)
        target = keys if layer in cross else seq
        target[1: steps + 2] += step.reshape(steps + 1, m, -1)
        total, steps = grown, steps + 1
    return {"rows": seq.sum(0) if total > 0 else None, "keys": None if keys is None else keys.sum(0),
            "head_weights": torch.stack(heads), "evidence": torch.stack(evidence)}


def _fused_keys(attention: LayerAttention, query: int) -> int:
    # Causal rows up to the query attend to keys up to the query only (prefix-LM pairs stay inside
    # the prompt: capture checks it); a cross-attention layer's keys are all vision keys.
    return query + 1 if attention.causal else attention.n_keys
