"""Properties of GLIMPSE's maths (docs/method.md, Steps 1-5) on random captured tensors, without a model.

Hypothesis draws the sequence (template, image, prompt and answer token counts), the layers, the
heads and the values of A and dz_t/dA (or of Q, K, V, dO), and the method's own code
(`Glimpse.reduce_layer` / `reduce_blocks`, `finish_token`, `combine`; `fuse_heads`) computes the
maps: see tests/property_inputs.py. Derandomized and without an example database, so every run
tests the same examples.
"""

from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimpse import blocks
from glimpse.methods import glimpse_blocks
from glimpse.methods.glimpse import EPS, WEIGHTINGS, Glimpse, fuse_heads
from property_inputs import Captured, captured, explain, explain_blockwise, outputs, reference_maps, streams
from test_blocks import explicit

# Random traces are often degenerate (a token without gradient in any layer): the fallback each takes is
# tested in test_glimpse.py; here it would only bury the output in hundreds of warnings.
pytestmark = pytest.mark.filterwarnings("ignore::glimpse.errors.FallbackWarning")

PROPERTY = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAPS = ("token_visual", "token_prompt", "visual", "prompt")


def assert_same(ours: dict, theirs: dict, names=None, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    for name in names or ours:
        torch.testing.assert_close(torch.as_tensor(ours[name]).double(), torch.as_tensor(theirs[name]).double(),
                                   rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def coherence(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Step 2's head score sum(ReLU(g) A) / max(eps, sum(ReLU(g))) per head, in float64 ([H, N, N] inputs)."""
    positive = grad.double().clamp(min=0)
    return (positive * attn.double()).sum((1, 2)) / positive.sum((1, 2)).clamp(min=EPS)


@PROPERTY
@given(captured())
def test_maps_and_their_parts_are_non_negative(case):
    """G = ReLU(g A) >= 0, so E >= 0 with rows summing to 1 (or exactly 0 where no entry has positive
    gradient times attention); head weights (a softmax) > 0; alpha >= 0 (L1 evidence times a
    softmax prior), all summing to 1; every propagated row r_t = e_t prod_l (I + alpha^l E_l / 2)
    is >= 0, >= 1 at t's query row, and sums to at most prod_l (1 + alpha^l / 2); hence the per-token and
    holistic image and prompt maps are >= 0."""
    result, states = explain(case)
    for t, query in enumerate(case.positions.queries):
        for l in range(case.n_layers):
            attn, grad = case.attn[l, :, : query + 1], case.grads[t, l, :, : query + 1]
            fused = fuse_heads(attn, grad, 0.5)
            assert fused["fused"].min() >= 0 and fused["head_weights"].min() > 0
            sums = fused["fused"].sum(1)
            live = (grad.clamp(min=0) * attn).sum((0, 2)) > 0
            torch.testing.assert_close(sums[live], torch.ones(int(live.sum())))
            assert torch.all(sums[~live] == 0)
        row, alpha = states[t]["row"], states[t]["alpha"]
        assert row.min() >= 0 and row[query] >= 1
        assert row.sum() <= torch.prod(1 + alpha / 2) * (1 + 1e-5)
    details = result.details
    assert details["alpha"].min() >= 0 and details["head_weights"].min() > 0
    torch.testing.assert_close(details["alpha"].sum(-1), torch.ones(case.positions.answer))
    torch.testing.assert_close(details["head_weights"].sum(-1), torch.ones(case.positions.answer, case.n_layers))
    for name in MAPS:
        assert getattr(result, name).min() >= 0, name


@PROPERTY
@given(captured(), st.sampled_from(WEIGHTINGS))
def test_token_weights_are_a_distribution(case, mode):
    """beta^V and beta^P are >= 0 and sum to 1 in every weighting mode, and are Step 4's formula:
    full: beta^V ~ p_t a_t, beta^P ~ p_t v_t (crossed), confidence ~ p_t, prompt ~ a_t / v_t,
    uniform 1/T, and exactly 1/T when the raw weights sum to 0; gamma = beta^V beta^P."""
    result, _ = explain(case, Glimpse(token_weighting=mode))
    probs = torch.tensor(case.probs, dtype=torch.float32)
    a, v = result.token_prompt.mean(1), result.token_visual.mean(1)
    raw = {"full": (probs * a, probs * v), "confidence": (probs, probs), "prompt": (a, v),
           "uniform": (torch.ones_like(probs), torch.ones_like(probs))}[mode]
    for beta, weights in zip((result.token_weights, result.details["beta_prompt"]), raw):
        assert beta.min() >= 0
        torch.testing.assert_close(beta.sum(), torch.tensor(1.0))
        expected = weights / weights.sum() if weights.sum() > 0 else torch.full_like(weights, 1 / len(weights))
        torch.testing.assert_close(beta, expected)
    torch.testing.assert_close(result.details["gamma"], result.token_weights * result.details["beta_prompt"])


@PROPERTY
@given(captured(min_heads=2).flatmap(lambda case: st.tuples(st.just(case), st.permutations(range(case.n_heads)))))
def test_permuting_heads_permutes_only_the_head_weights(drawn):
    """Permuting the head axis of A and of every G together (every layer, every token) leaves every
    map, beta, gamma and alpha unchanged and permutes the head weights the same way."""
    case, order = drawn
    ours, permuted = outputs(explain(case)[0]), outputs(explain(case.heads(list(order)))[0])
    assert_same(permuted, ours, [name for name in ours if name != "head_weights"])
    torch.testing.assert_close(permuted["head_weights"], ours["head_weights"][..., list(order)])


@PROPERTY
@given(captured(min_heads=2).flatmap(lambda case: st.tuples(st.just(case), st.integers(0, case.n_heads - 1))),
       st.booleans())
def test_a_head_without_positive_gradient_adds_nothing(drawn, negative):
    """Head weights are a softmax, so no head gets weight 0: a head whose gradient is zero (or
    nowhere positive) has score exactly 0, the lowest any head can have (a score is the
    ReLU(g)-weighted mean of A, in [0, 1]), hence the smallest weight,
    w_z = 1 / sum_h exp(s_h / lambda) > 0. It adds nothing all the same: its ReLU(g) A is zero, and
    E is row-normalised, so dropping the head from A and G leaves every layer's E unchanged (the
    other weights only rescale, by 1 / (1 - w_z)). With a zero gradient the layer evidence is
    unchanged too, so all maps, betas and alpha are; a negative gradient still counts in the
    evidence ||sum_h g_h||_1, so there only E is unchanged."""
    (case, zero), lam = drawn, 0.5
    grads = case.grads.clone()
    grads[:, :, zero] = -grads[:, :, zero].abs() if negative else 0.0
    case = Captured(case.positions, case.attn, grads, case.probs)
    others = [h for h in range(case.n_heads) if h != zero]
    result = outputs(explain(case)[0])
    weights = result["head_weights"]  # [T, L, H]
    assert torch.equal(weights[..., zero], weights.min(-1).values) and weights.min() > 0
    for t, query in enumerate(case.positions.queries):
        for l in range(case.n_layers):
            attn, grad = case.attn[l, :, : query + 1], case.grads[t, l, :, : query + 1]
            scores = coherence(attn, grad)
            assert scores[zero] == 0 and scores.max() <= 1
            torch.testing.assert_close(weights[t, l, zero].double(), 1 / torch.exp(scores / lam).sum(), rtol=1e-5, atol=0)
            kept = fuse_heads(attn[others], grad[others], lam)
            torch.testing.assert_close(fuse_heads(attn, grad, lam)["fused"], kept["fused"])
            torch.testing.assert_close(kept["head_weights"], weights[t, l, others] / (1 - weights[t, l, zero]))
    if not negative:
        without = outputs(explain(case.heads(others))[0])
        assert_same(without, result, [name for name in result if name != "head_weights"])


@PROPERTY
@given(captured(), st.floats(1e-3, 1e3))
def test_scaling_the_gradients_changes_no_normalised_output(case, scale):
    """G -> c G (c > 0): ReLU(c g) A = c ReLU(g) A and the layer evidence ||sum_h c g_h||_1 scale by c,
    but everything GLIMPSE normalises does not change: the head scores are a ratio
    sum(ReLU(g) A) / sum(ReLU(g)) (so the temperature softmax over them IS scale invariant here),
    E is row-normalised, alpha = g^l s^l / sum_k g^k s^k and the betas divide by their sums. So
    the maps, betas, gamma, alpha and head weights are unchanged. (Exact only while
    c * sum(ReLU(g_h)) stays >= eps = 1e-12 for every head with positive gradient: the score's
    denominator is clamped there; the gradients here are on a 1/8 grid, so it always does.)"""
    scaled = Captured(case.positions, case.attn, case.grads * scale, case.probs)
    assert_same(outputs(explain(scaled)[0]), outputs(explain(case)[0]))
    method = Glimpse()
    for t, query in enumerate(case.positions.queries):
        for l in range(case.n_layers):
            ours, theirs = (method.reduce_layer(c.attn[l], c.grads[t, l], query) for c in (case, scaled))
            torch.testing.assert_close(theirs["evidence"], ours["evidence"] * scale)
            torch.testing.assert_close(theirs["fused"], ours["fused"])


@PROPERTY
@given(captured().flatmap(lambda case: st.tuples(st.just(case), st.integers(0, case.positions.answer - 1))),
       st.booleans())
def test_a_token_that_cannot_see_the_image_gets_no_visual_relevance(drawn, one_layer):
    """Token t cannot see the image when no position from the image's end to t's query row attends
    to an image position in any layer (masked before the softmax, every head): then r_t[V] == 0
    exactly. Zeroing the query row's own image attention is enough only when a single layer is
    propagated (r_t = e_t + alpha/2 e_t E): with two or more, relevance reaches the image through
    earlier text rows that do see it (rollout's multi-hop paths), so with more layers the whole span
    from the image to the query row is masked here."""
    case, t = drawn
    pos = case.positions
    query = pos.queries[t]
    method = Glimpse(layer_fraction=0.01) if one_layer else Glimpse()
    rows = [query] if one_layer else list(range(pos.image_positions[-1] + 1, query + 1))
    result, states = explain(case.blinded(rows), method)
    assert torch.all(result.token_visual[t] == 0)
    assert torch.all(states[t]["row"][pos.image_positions] == 0)


@settings(PROPERTY, max_examples=50)
@given(streams(), st.integers(1, 96), st.sampled_from([0, 40, 1 << 26]))
def test_streamed_and_full_matrix_paths_agree(case, block_elements, cache_elements):
    """On random Q, K, V, dO with a causal mask (implicit, boolean or additive), GLIMPSE block-wise
    (attention recomputed in row blocks of a drawn size, the streamed polynomial-in-1/Z sweep, a
    full, partial or empty cache) gives the same maps, betas, alpha and head weights as on the
    explicit matrices A, dz/dA that test_blocks.explicit computes by autograd in float64, and both
    agree with the float64 reference (tests/reference.py). Both library paths compute in float32 by
    design (docs/method.md: steps 1-5 in float32; blocks.py casts every block), so "allclose" is
    float32's: rtol 1e-4."""
    pos = case.positions
    n = pos.length
    attn, grads = [], torch.zeros(pos.answer, case.n_layers, case.query.shape[1], n, n, dtype=torch.float64)
    for l in range(case.n_layers):
        for t, query in enumerate(pos.queries):
            # explicit() reads an implicit causal mask at test_blocks' own N: give it the same mask explicitly.
            probs, grad = explicit(case.layer(l, t, mask=case.mask or "bool"))
            grads[t, l, :, : query + 1] = grad
        attn.append(probs)
    attn = torch.stack(attn)
    full, _ = explain(Captured(pos, attn.float(), grads.float(), case.probs))
    with mock.patch.object(blocks, "BLOCK_ELEMENTS", block_elements), \
            mock.patch.object(glimpse_blocks, "CACHE_ELEMENTS", cache_elements):
        streamed, _ = explain_blockwise(case)
    assert full.layers == streamed.layers
    assert_same(outputs(streamed), outputs(full), rtol=1e-4, atol=1e-6)
    expected = reference_maps(pos, attn, grads, case.probs)
    assert_same(outputs(full), expected, list(expected), rtol=1e-4, atol=1e-6)


def test_the_strategies_reach_the_edge_cases():
    """The properties above are not vacuous: the drawn cases include a uniform-fallback token weighting,
    a layer with no positive gradient, several heads and layers, and tokens whose image map is not zero."""
    seen = set()

    @settings(PROPERTY, max_examples=60)
    @given(captured())
    def look(case):
        result, _ = explain(case)
        seen.add(("layers", case.n_layers > 1))
        seen.add(("heads", case.n_heads > 1))
        seen.add(("visual", bool(result.token_visual.sum() > 0)))
        seen.add(("fallback", bool(any("uniformly" in note for note in result.notes))))
        seen.add(("silent layer", bool((case.grads.clamp(min=0).sum((2, 3, 4)) == 0).any())))

    look()
    assert {(name, True) for name in ("layers", "heads", "visual", "fallback", "silent layer")} <= seen, seen

