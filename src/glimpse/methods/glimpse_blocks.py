"""GLIMPSE Steps 1-3 on attention recomputed in row blocks (`blocks.LayerAttention`): the same
equations as `glimpse.fuse_heads` and `glimpse.propagate`, without an N x N matrix.

alpha^l normalises over all layers and the head weights over all of a layer's rows, so the work
is split in two passes over the blocks: during the token's backward pass, each layer's per-head
sums and layer evidence (`layer_scalars`); after it, from the last layer down, the propagated row
times the layer's fused matrix (`fused_product`), rebuilt block by block with the known weights.
"""

from __future__ import annotations

from typing import Any

import torch

from ..blocks import LayerAttention

EPS = 1e-12


def layer_scalars(attention: LayerAttention, query: int, head_lambda: float) -> dict[str, Any]:
    """Step 2's head weights and Step 3's layer evidence ||sum_h g_h||_1 over rows 0..query (all
    key columns: masked ones still carry gradient into the head sums), with the layer's inputs
    kept for `fused_product`."""
    heads = attention.n_heads
    device = attention.query.device
    coherent = torch.zeros(heads, device=device)
    positive = torch.zeros(heads, device=device)
    evidence = torch.zeros((), device=device)
    for _, attn, grad in attention.row_blocks(query + 1, _fused_keys(attention, query), attention.n_keys):
        positive += grad.clamp(min=0).sum((1, 2))
        evidence += grad.sum(0).abs().sum()
        # ReLU(g) * A = ReLU(g * A) since A >= 0; A is zero past the block's last key.
        coherent += (grad[:, :, : attn.shape[-1]] * attn).clamp_(min=0).sum((1, 2))
    head_weights = torch.softmax(coherent / positive.clamp(min=EPS) / head_lambda, dim=0)
    return {"head_weights": head_weights, "evidence": evidence, "attention": attention}


def fused_product(rows: torch.Tensor, attention: LayerAttention, head_weights: torch.Tensor,
                  query: int) -> torch.Tensor:
    """rows [m, query + 1] @ E, E the row-normalised sum_h w_h ReLU(g_h) A_h of rows 0..query
    ([query + 1, query + 1] for causal self-attention, [query + 1, K] for cross-attention)."""
    keys = _fused_keys(attention, query)
    out = torch.zeros(rows.shape[0], keys, device=rows.device)
    weights = head_weights.to(rows.device)
    for block, attn, grad in attention.row_blocks(query + 1, keys):
        carried = rows[:, block]
        if not bool(carried.any()):  # e.g. every block but the query's in the last layer (r is one-hot there)
            continue
        fused = torch.einsum("h,hbk->bk", weights, (grad * attn).clamp_(min=0))
        sums = fused.sum(1)
        scale = torch.where(sums > 0, 1.0 / sums.clamp(min=EPS), torch.zeros_like(sums))
        out[:, : fused.shape[1]] += (carried * scale) @ fused
    return out


def _fused_keys(attention: LayerAttention, query: int) -> int:
    # Causal rows up to the query attend to keys up to the query only (prefix-LM pairs stay inside
    # the prompt: capture checks it); a cross-attention layer's keys are all vision keys.
    return query + 1 if attention.causal else attention.n_keys
