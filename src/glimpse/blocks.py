"""One attention layer's probabilities and their gradient, recomputed in blocks of query rows.

When the language model keeps its own attention kernel (sdpa / flash), no N x N matrix is ever
stored. What a layer's backward pass has is enough to rebuild any rows of them: the layer's Q, K, V
(kept by autograd anyway) and, for one answer token, dO = dz/d(attention output). Per head,
A = softmax(Q K^T * scale + mask) and dz/dA = dO V^T, exactly (the output is A V). `LayerAttention`
hands them out a block of rows at a time, in float32, so that working memory is one block
([heads, rows, keys]) whatever the sequence length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Elements of one [heads, rows, keys] float32 block (16 MB); a block holds at least one row.
BLOCK_ELEMENTS = 1 << 22
# At most this many rows a block: causal blocks are triangular, so smaller blocks skip more of the
# keys no row of theirs can see.
MAX_BLOCK_ROWS = 128


@dataclass
class LayerAttention:
    """One layer's attention inputs for one sequence (batch row 0).

    query [H, N, D]; key, value [Hkv, K, D] (grouped-query heads not expanded: query head h reads
    key head h // (H / Hkv)); mask None (causal when `causal`, else every key) or [1 or H, N, K],
    boolean (True attends) or additive; grad_output [H, rows, D]: dz/d(output) of the answer token
    being explained, rows 0..query (later rows cannot reach its logit: their gradient is zero).
    `zero_keys`: key columns whose attention is set to zero after the softmax (exclude_sinks)."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    causal: bool
    grad_output: torch.Tensor | None = None
    zero_keys: torch.Tensor | None = None

    @property
    def n_heads(self) -> int:
        return self.query.shape[0]

    @property
    def n_keys(self) -> int:
        return self.key.shape[1]

    def row_blocks(self, stop: int, attention_keys: int, gradient_keys: int | None = None,
                   block_elements: int | None = None,
                   start: int = 0) -> Iterator[tuple[slice, torch.Tensor | None, torch.Tensor | None]]:
        """(rows, A [H, b, k], dz/dA [H, b, gradient_keys or k]) for rows start..stop-1, where
        k <= attention_keys is the block's last key that any of its rows may attend to, plus one
        (causal blocks are triangular: the later keys hold no probability). A block whose rows get
        no gradient is (rows, None, None), computed no further: its dz/dA is zero (in the last
        layer, every row but the answer token's).

        A is normalised over the first `attention_keys` keys only: the caller asks for fewer than
        all keys only where the rest are masked for these rows (causal rows up to the query), so
        their probability is exactly zero and the softmax is unchanged."""
        width = max(attention_keys, gradient_keys or 0)
        size = min(MAX_BLOCK_ROWS, max(1, (block_elements or BLOCK_ELEMENTS) // (self.n_heads * max(width, 1))))
        keys = self.key[:, :attention_keys].float().transpose(1, 2)
        values = self.value.float().transpose(1, 2)
        for first in range(start, stop, size):
            rows = slice(first, min(first + size, stop))
            if not bool(self.grad_output[:, rows].any()):
                yield rows, None, None
                continue
            reach = self._reach(rows, attention_keys)
            attn = self._probabilities(rows, keys[..., :reach])
            yield rows, attn, per_head(self.grad_output[:, rows].float(), values[..., : gradient_keys or reach])

    def _reach(self, rows: slice, keys: int) -> int:
        """One past the last of the first `keys` keys that any row of the block may attend to."""
        if self.mask is None:
            return min(keys, rows.stop) if self.causal else keys
        where = torch.nonzero(attends(self.mask[:, rows, :keys]).any(0).any(0))
        return int(where[-1]) + 1 if len(where) else keys

    def _probabilities(self, rows: slice, keys: torch.Tensor) -> torch.Tensor:
        scores = per_head(self.query[:, rows].float() * self.scaling, keys)
        n = keys.shape[-1]
        low = torch.finfo(scores.dtype).min
        if self.mask is None:
            if self.causal:  # only the block's diagonal square holds later keys
                position = torch.arange(rows.start, rows.stop, device=scores.device)[:, None]
                later = torch.arange(rows.start, n, device=scores.device)[None] > position
                scores[..., rows.start:].masked_fill_(later, low)
        elif self.mask.dtype == torch.bool:
            scores.masked_fill_(~self.mask[:, rows, :n], low)
        else:
            scores += self.mask[:, rows, :n].float()
        attn = torch.softmax(scores, dim=-1)
        if self.zero_keys is not None:
            attn.index_fill_(-1, self.zero_keys[self.zero_keys < n], 0.0)
        return attn


def attends(mask: torch.Tensor) -> torch.Tensor:
    """True where a boolean (True attends) or additive mask lets a query attend to a key."""
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def per_head(rows: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """rows [H, b, D] @ keys [Hkv, D, n] -> [H, b, n], query head h paired with key head h // (H / Hkv)."""
    heads, b, d = rows.shape
    kv = keys.shape[0]
    grouped = rows.reshape(kv, (heads // kv) * b, d)
    return torch.matmul(grouped, keys).reshape(heads, b, keys.shape[-1])
