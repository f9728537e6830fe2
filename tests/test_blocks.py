"""Attention recomputed in row blocks (glimpse.blocks) against explicit matrices and autograd."""

import pytest
import torch

from glimpse.blocks import LayerAttention
from glimpse.methods.glimpse import fuse_heads
from glimpse.methods.glimpse_blocks import fused_product, layer_pass

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
    head_weights, evidence, cached = layer_pass(attention, query, 0.5, cache_elements=200)
    torch.testing.assert_close(head_weights, expected["head_weights"])
    torch.testing.assert_close(evidence, grad.sum(0).abs().sum())
    rows = torch.rand(3, query + 1, generator=torch.Generator().manual_seed(seed))
    for kept in ([], cached):  # recomputed, and partly cached
        torch.testing.assert_close(fused_product(rows, attention, head_weights, query, kept), rows @ expected["fused"])


@pytest.mark.parametrize("kind", ["causal", "cross"])
def test_rows_without_gradient_are_skipped_and_change_nothing(kind, monkeypatch):
    """The last layer's shape: only the answer token's row gets gradient. Its blocks alone are
    recomputed, and the head weights, evidence and fused product are the explicit ones."""
    attention = case(kind, seed=3)
    query = attention.grad_output.shape[1] - 1
    attention.grad_output[:, :query] = 0
    probs, grad = explicit(attention)
    expected = fuse_heads(probs[:, : query + 1], grad, 0.5, attention.causal)
    computed = []
    original = LayerAttention._probabilities

    def counted(self, rows, keys):
        computed.append(rows)
        return original(self, rows, keys)
    monkeypatch.setattr(LayerAttention, "_probabilities", counted)
    monkeypatch.setattr("glimpse.blocks.MAX_BLOCK_ROWS", 4)
    head_weights, evidence, cached = layer_pass(attention, query, 0.5)
    assert computed == [slice(16, 17)]  # blocks of 4 rows: 0-3, ..., 12-15 have no gradient
    assert [weighted is None for _, weighted in cached] == [True] * 4 + [False]
    torch.testing.assert_close(head_weights, expected["head_weights"])
    torch.testing.assert_close(evidence, grad.sum(0).abs().sum())
    rows = torch.rand(2, query + 1, generator=torch.Generator().manual_seed(3))
    for kept in ([], cached):
        torch.testing.assert_close(fused_product(rows, attention, head_weights, query, kept), rows @ expected["fused"])


@pytest.mark.parametrize("cache_elements", [0, 300, 1 << 26])
@pytest.mark.parametrize("silent", [(), (1,), (0, 1, 2, 3)])
def test_streamed_sweep_is_the_two_pass_propagation(monkeypatch, cache_elements, silent):
    """The polynomial-in-1/Z sweep equals alpha = w / Z applied layer by layer, with the cache full,
    partial or empty, with layers that have no gradient, and with a cross-attention layer; with no
    evidence at all it hands back no row (alpha is then the prior)."""
    from glimpse.methods import glimpse_blocks
    from glimpse.methods.glimpse import layer_product, layer_weights, one_hot, propagate

    monkeypatch.setattr(glimpse_blocks, "CACHE_ELEMENTS", cache_elements)
    attentions = {l: case("cross" if l == 2 else "causal", seed=l) for l in range(4)}
    for l in silent:
        attentions[l].grad_output = torch.zeros_like(attentions[l].grad_output)
    layers, query, cross = [0, 1, 2, 3], attentions[0].grad_output.shape[1] - 1, frozenset({2})
    prior = torch.softmax(0.2 * torch.arange(1.0, 5.0), 0)
    starts = [query - 5, query]  # two answer tokens' rows carried at once (glimpse_fast)
    swept = glimpse_blocks.propagate_streamed(attentions, layers, query, 0.5, prior, cross, starts)
    reduced = {l: dict(zip(("head_weights", "evidence"), layer_pass(attentions[l], query, 0.5, 0)[:2]),
                       attention=attentions[l]) for l in layers}
    evidence = torch.stack([reduced[l]["evidence"] for l in layers])
    torch.testing.assert_close(swept["evidence"], evidence)
    torch.testing.assert_close(swept["head_weights"], torch.stack([reduced[l]["head_weights"] for l in layers]))
    if len(silent) == len(layers):
        assert swept["rows"] is None
        return
    rows, keys = propagate(one_hot(starts, query + 1), layers, layer_weights(evidence, prior),
                           layer_product(reduced, query), cross)
    torch.testing.assert_close(swept["rows"], rows)
    torch.testing.assert_close(swept["keys"], keys)
