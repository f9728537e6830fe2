"""Attention recomputed in row blocks (glimpse.blocks) against explicit matrices and autograd."""

import pytest
import torch

from glimpse.blocks import LayerAttention
from glimpse.methods.glimpse import fuse_heads
from glimpse.methods.glimpse_blocks import fused_product, layer_scalars

HEADS, KV_HEADS, N, D = 4, 2, 23, 8


def explicit(attention: LayerAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """A [H, N, K] (explicit softmax with the same mask) and dz/dA by autograd from grad_output."""
    groups = HEADS // KV_HEADS
    key = attention.key.repeat_interleave(groups, 0)
    value = attention.value.repeat_interleave(groups, 0)
    scores = attention.query @ key.transpose(1, 2) * attention.scaling
    low = torch.finfo(scores.dtype).min
    if attention.mask is None:
        if attention.causal:
            scores = scores.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), low)
    elif attention.mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention.mask, low)
    else:
        scores = scores + attention.mask
    probs = torch.softmax(scores, -1).requires_grad_(True)
    rows = attention.grad_output.shape[1]
    output = probs[:, :rows] @ value
    (grad,) = torch.autograd.grad(output, probs, attention.grad_output)
    return probs.detach(), grad[:, :rows]


def case(kind: str, seed: int = 0) -> LayerAttention:
    g = torch.Generator().manual_seed(seed)
    keys = 7 if kind == "cross" else N
    query, key, value = (torch.randn(h, n, D, generator=g) for h, n in ((HEADS, N), (KV_HEADS, keys), (KV_HEADS, keys)))
    mask = None
    if kind == "bool":  # causal with a bidirectional prefix of 5 positions
        mask = torch.ones(N, N, dtype=torch.bool).tril()
        mask[:5, :5] = True
        mask = mask[None]
    elif kind == "cross":  # additive, some keys masked, one row masked entirely
        mask = torch.zeros(1, N, keys)
        mask[..., 2] = torch.finfo(torch.float32).min
        mask[:, 3] = torch.finfo(torch.float32).min
    rows = 17
    return LayerAttention(query, key, value, mask, D ** -0.5, causal=kind != "cross",
                          grad_output=torch.randn(HEADS, rows, D, generator=g))


@pytest.mark.parametrize("kind", ["causal", "bool", "cross"])
@pytest.mark.parametrize("block_elements", [1, 97, 1 << 20])
def test_row_blocks_are_the_explicit_rows(kind, block_elements):
    attention = case(kind)
    probs, grad = explicit(attention)
    rows = attention.grad_output.shape[1]
    keys = rows if attention.causal else attention.n_keys
    seen = []
    for block, attn, g in attention.row_blocks(rows, keys, attention.n_keys, block_elements=block_elements):
        seen.extend(range(block.start, block.stop))
        reach = attn.shape[-1]
        assert reach <= keys
        torch.testing.assert_close(attn, probs[:, block, :reach])
        torch.testing.assert_close(g, grad[:, block])
        # The keys a block leaves out hold no probability for its rows.
        assert float(probs[:, block, reach:].abs().sum()) == 0.0
    assert seen == list(range(rows))


def test_zero_keys_zero_the_columns_after_the_softmax():
    attention = case("causal")
    attention.zero_keys = torch.tensor([0, 3])
    probs, _ = explicit(case("causal"))
    for block, attn, _ in attention.row_blocks(10, 10, block_elements=1):
        assert float(attn[..., [k for k in (0, 3) if k < attn.shape[-1]]].abs().sum()) == 0.0
        torch.testing.assert_close(attn[..., 4:], probs[:, block, 4: attn.shape[-1]])


@pytest.mark.parametrize("kind", ["causal", "bool", "cross"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glimpse_steps_match_the_explicit_fusion(kind, seed):
    attention = case(kind, seed)
    query = attention.grad_output.shape[1] - 1
    probs, grad = explicit(attention)
    causal = attention.causal
    expected = fuse_heads(probs[:, : query + 1], grad, 0.5, causal)
    scalars = layer_scalars(attention, query, 0.5)
    torch.testing.assert_close(scalars["head_weights"], expected["head_weights"])
    torch.testing.assert_close(scalars["evidence"], grad.sum(0).abs().sum())
    rows = torch.rand(3, query + 1, generator=torch.Generator().manual_seed(seed))
    product = fused_product(rows, attention, scalars["head_weights"], query)
    torch.testing.assert_close(product, rows @ expected["fused"])
