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

from ..blocks import LayerAttention, shared_row_blocks

EPS = 1e-12
# Gradient-weighted attention elements (float32) one layer's first pass keeps for its second, all the
# answer tokens of a group together (256 MB).
CACHE_ELEMENTS = 1 << 26

Cached = list[tuple[slice, torch.Tensor | None]]  # None: a block without gradient


def layer_pass(attention: LayerAttention, query: int, head_lambda: float,
               cache_elements: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Cached]:
    """Step 2's head weights and Step 3's layer evidence ||sum_h g_h||_1 over rows 0..query (all
    key columns: masked ones still carry gradient into the head sums), and the first row blocks of
    ReLU(g) A ([H, b, k]) within `cache_elements`."""
    return layer_passes([attention], [query], head_lambda, cache_elements)[0]


def layer_passes(views: list[LayerAttention], queries: list[int], head_lambda: float,
                 cache_elements: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor, Cached]]:
    """`layer_pass` for several answer tokens of one layer (the same Q, K, V; each token its own
    grad_output and query row), each row block's attention computed once for all of them. The
    tokens share `cache_elements` (a token's share each), so that the group holds no more than one
    token would."""
    heads, device = views[0].n_heads, views[0].query.device
    sums = [[torch.zeros(heads, device=device), torch.zeros(heads, device=device), torch.zeros((), device=device)]
            for _ in views]  # per token: coherent, positive, evidence
    rooms = [(CACHE_ELEMENTS if cache_elements is None else cache_elements) // len(views)] * len(views)
    caches: list[Cached] = [[] for _ in views]
    caching = [True] * len(views)  # a cache holds the first blocks only: the second pass recomputes the rest
    keys = [_fused_keys(view, query) for view, query in zip(views, queries)]
    for rows, attn, grads in shared_row_blocks(views, [q + 1 for q in queries], keys, views[0].n_keys):
        for j, grad in enumerate(grads):
            own = slice(rows.start, min(rows.stop, queries[j] + 1))
            if own.stop <= own.start:
                continue
            weighted = None if grad is None else _accumulate(sums[j], grad, attn[:, : grad.shape[1], : keys[j]])
            caching[j] = caching[j] and (weighted is None or weighted.numel() <= rooms[j])
            if caching[j]:
                caches[j].append((own, weighted))
                rooms[j] -= 0 if weighted is None else weighted.numel()
    return [(torch.softmax(coherent / positive.clamp(min=EPS) / head_lambda, dim=0), evidence, cached)
            for (coherent, positive, evidence), cached in zip(sums, caches)]


def _accumulate(sums: list[torch.Tensor], grad: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Add one block of one token to its head sums and evidence; its ReLU(g) A ([H, b, k])."""
    coherent, positive, evidence = sums
    evidence += grad.sum(0).abs().sum()
    relu_grad = grad.clamp_(min=0)  # in place: the block's gradient is not needed any more
    positive += relu_grad.sum((1, 2))
    weighted = relu_grad[:, :, : attn.shape[-1]] * attn  # A is zero past the block's last key
    coherent += weighted.sum((1, 2))
    return weighted


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
    return propagate_streamed_tokens([attentions], layers, [query], head_lambda, prior, cross,
                                     [[query] if starts is None else starts])[0]


def propagate_streamed_tokens(attentions: list[dict[int, LayerAttention]], layers: list[int], queries: list[int],
                              head_lambda: float, prior: torch.Tensor, cross: frozenset[int],
                              starts: list[list[int]]) -> list[dict[str, Any]]:
    """`propagate_streamed` for several answer tokens at once (each its layers' views, query row and
    start rows), in lockstep down the layers: each layer's attention blocks are computed once for all
    of them (`layer_passes`)."""
    sweeps = [_Sweep(views, layers, query, prior, cross, rows) for views, query, rows in zip(attentions, queries, starts)]
    for i in reversed(range(len(layers))):
        layer = layers[i]
        views = [token[layer] for token in attentions]
        for sweep, passed in zip(sweeps, layer_passes(views, queries, head_lambda)):
            sweep.step(i, layer, *passed)
    return [sweep.result() for sweep in sweeps]


class _Sweep:
    """One answer token's rows carried from the last layer down (the module's docstring)."""

    def __init__(self, views: dict[int, LayerAttention], layers: list[int], query: int, prior: torch.Tensor,
                 cross: frozenset[int], starts: list[int]) -> None:
        device = views[layers[-1]].query.device
        n, m = len(layers), len(starts)
        self.views, self.query, self.prior, self.cross, self.m = views, query, prior, cross, m
        self.seq = torch.zeros(n + 1, m, query + 1, device=device)
        self.seq[0, torch.arange(m), torch.tensor(starts)] = 1.0
        self.keys = torch.zeros(n + 1, m, views[min(cross)].n_keys, device=device) if cross else None
        self.total, self.steps = 0.0, 0
        self.heads: list[Any] = [None] * n
        self.evidence: list[Any] = [None] * n

    def step(self, i: int, layer: int, head_weights: torch.Tensor, evidence: torch.Tensor, cached: Cached) -> None:
        self.heads[i], self.evidence[i] = head_weights, evidence
        weight = float(evidence) * float(self.prior[i])
        if weight == 0.0:
            return
        grown = self.total + weight
        scale = torch.tensor([(self.total / grown) ** k for k in range(len(self.heads) + 1)],
                             device=self.seq.device)[:, None, None]
        self.seq *= scale
        if self.keys is not None:
            self.keys *= scale
        steps, m = self.steps, self.m
        carried = self.seq[: steps + 1].reshape((steps + 1) * m, self.query + 1)
        step = fused_product(carried, self.views[layer], head_weights, self.query, cached) * (0.5 * weight / grown)
        target = self.keys if layer in self.cross else self.seq
        target[1: steps + 2] += step.reshape(steps + 1, m, -1)
        self.total, self.steps = grown, steps + 1

    def result(self) -> dict[str, Any]:
        return {"rows": self.seq.sum(0) if self.total > 0 else None,
                "keys": None if self.keys is None else self.keys.sum(0),
                "head_weights": torch.stack(self.heads), "evidence": torch.stack(self.evidence)}


def _fused_keys(attention: LayerAttention, query: int) -> int:
    # Causal rows up to the query attend to keys up to the query only (prefix-LM pairs stay inside
    # the prompt: capture checks it); a cross-attention layer's keys are all vision keys.
    return query + 1 if attention.causal else attention.n_keys
