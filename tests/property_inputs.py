"""Random GLIMPSE inputs for the property tests (tests/methods/test_properties.py), and the method's
own maths run on them without a model.

Hypothesis strategies draw a sequence [template, V, template, P, template, Y] (`Positions`), the
attention A and per-answer-token gradients dz_t/dA capture hands GLIMPSE (`Captured`, float32 as
capture gives them), or the block-wise inputs Q, K, V, dO (`Streams`). `explain` feeds a `Captured`
through `Glimpse.reduce_layer`, `finish_token` and `combine` exactly as capture would, and
`explain_blockwise` does the same through `reduce_blocks` (the streamed path).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import reference
from glimpse.blocks import LayerAttention
from glimpse.capture import TokenTrace, Trace
from glimpse.layout import ImageLayout, ImageTile, SequenceLayout
from glimpse.methods.base import MethodResult
from glimpse.methods.glimpse import Glimpse

# Gradients are drawn on a grid of 1/8 (|g| <= 3): every positive head sum is >= 1/8, far above
# GLIMPSE's eps (1e-12), and zeros and ties are common. Attention scores are any floats in [-4, 4].
GRADIENT_STEPS, GRADIENT_STEP = 24, 1 / 8
SCORES = st.floats(-4, 4, allow_subnormal=False, width=32)
PROBS = st.floats(0, 1, allow_subnormal=False)


@dataclass(frozen=True)
class Positions:
    """Token counts of [prefix template, image V, gap template, prompt P, suffix template, answer Y]."""

    prefix: int
    image: int
    gap: int
    prompt: int
    suffix: int
    answer: int

    @property
    def length(self) -> int:
        return self.prefix + self.image + self.gap + self.prompt + self.suffix + self.answer

    @property
    def image_positions(self) -> list[int]:
        return list(range(self.prefix, self.prefix + self.image))

    @property
    def prompt_positions(self) -> list[int]:
        start = self.prefix + self.image + self.gap
        return list(range(start, start + self.prompt))

    @property
    def answer_positions(self) -> list[int]:
        return list(range(self.length - self.answer, self.length))

    @property
    def queries(self) -> list[int]:
        """Answer token t's query row: its logit is read one position earlier."""
        return [p - 1 for p in self.answer_positions]

    def layout(self) -> SequenceLayout:
        tile = ImageTile(1, self.image, (0.0, 0.0, float(self.image), 1.0), tuple(self.image_positions))
        return SequenceLayout(images=(ImageLayout(self.image, 1, (tile,)),), prompt=tuple(self.prompt_positions),
                              answer=tuple(self.answer_positions), length=self.length)


@st.composite
def positions(draw: st.DrawFn, max_image: int = 4, max_answer: int = 3) -> Positions:
    return Positions(prefix=draw(st.integers(0, 2)), image=draw(st.integers(1, max_image)), gap=draw(st.integers(0, 1)),
                     prompt=draw(st.integers(1, 3)), suffix=draw(st.integers(0, 2)),
                     answer=draw(st.integers(1, max_answer)))


def attention(scores: torch.Tensor, blind: torch.Tensor | None = None) -> torch.Tensor:
    """Causal softmax of scores [..., N, N]; `blind` [N, N] (True: masked) is masked as well, before
    the softmax as a model's mask is, so every row still sums to one."""
    n = scores.shape[-1]
    masked = torch.ones(n, n, dtype=torch.bool).triu(1)
    if blind is not None:
        masked = masked | blind
    return torch.softmax(scores.double().masked_fill(masked, float("-inf")), -1).float()


@dataclass(frozen=True)
class Captured:
    """What capture hands GLIMPSE for one sequence: A [L, H, N, N] and, per answer token t,
    G[t] = dz_t/dA [L, H, N, N] (float32; rows after t's query row are zero, as they are exactly
    for a causal model), the probabilities p_t, and the pre-softmax scores A came from (if drawn)."""

    positions: Positions
    attn: torch.Tensor
    grads: torch.Tensor
    probs: tuple[float, ...]
    scores: torch.Tensor | None = field(default=None, compare=False)

    @property
    def n_layers(self) -> int:
        return self.attn.shape[0]

    @property
    def n_heads(self) -> int:
        return self.attn.shape[1]

    def heads(self, index: list[int]) -> Captured:
        """The same sequence with only the heads `index` (in that order) in every layer."""
        return replace(self, attn=self.attn[:, index], grads=self.grads[:, :, index],
                       scores=None if self.scores is None else self.scores[:, index])

    def blinded(self, rows: list[int]) -> Captured:
        """A recomputed with the attention of `rows` to every image position masked, in every layer and head."""
        blind = torch.zeros(self.positions.length, self.positions.length, dtype=torch.bool)
        blind[torch.tensor(rows, dtype=torch.long)[:, None], torch.tensor(self.positions.image_positions)] = True
        return replace(self, attn=attention(self.scores, blind))


def causal_rows(grads: torch.Tensor, pos: Positions) -> torch.Tensor:
    """grads [T, ..., N, N] with the rows after each answer token's query row set to zero."""
    grads = grads.clone()
    for t, query in enumerate(pos.queries):
        grads[t, ..., query + 1:, :] = 0.0
    return grads


def values(shape: tuple[int, ...], elements: st.SearchStrategy, dtype: type, low: float, high: float) -> st.SearchStrategy:
    """An array of `elements` (within [low, high]): either Hypothesis's own (mostly one fill value and
    a few others: it finds ties, zeros and constant rows, and shrinks) or every element drawn
    independently, uniformly in [low, high] (on the integers for an integer dtype), by a generator
    whose seed is drawn: dense, as real attention and gradients are. Drawing every element through
    Hypothesis itself overruns its data budget at these sizes."""
    def dense(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if np.issubdtype(dtype, np.integer):
            return rng.integers(int(low), int(high) + 1, shape).astype(dtype)
        return rng.uniform(low, high, shape).astype(dtype)
    return st.one_of(arrays(dtype, shape, elements=elements), st.integers(0, 2**32 - 1).map(dense))


@st.composite
def captured(draw: st.DrawFn, min_heads: int = 1, max_heads: int = 4, max_layers: int = 3) -> Captured:
    pos = draw(positions())
    n_layers, n_heads, n, t = draw(st.integers(1, max_layers)), draw(st.integers(min_heads, max_heads)), pos.length, pos.answer
    scores = torch.from_numpy(draw(values((n_layers, n_heads, n, n), SCORES, np.float32, -4, 4)))
    steps = draw(values((t, n_layers, n_heads, n, n), st.integers(-GRADIENT_STEPS, GRADIENT_STEPS), np.int8,
                         -GRADIENT_STEPS, GRADIENT_STEPS))
    grads = causal_rows(torch.from_numpy(steps).float() * GRADIENT_STEP, pos)
    probs = tuple(draw(st.lists(PROBS, min_size=t, max_size=t)))
    return Captured(pos, attention(scores), grads, probs, scores)


def explain(case: Captured, method: Glimpse | None = None) -> tuple[MethodResult, list[dict]]:
    """GLIMPSE on explicit matrices (the full-matrix path): (result, each answer token's state:
    propagated row over positions 0..query, alpha, head weights)."""
    method = method or Glimpse()
    layers = method.layers(case.n_layers)
    tokens = []
    for t, (position, query) in enumerate(zip(case.positions.answer_positions, case.positions.queries)):
        reduced = {l: method.reduce_layer(case.attn[l], case.grads[t, l], query) for l in layers}
        tokens.append(TokenTrace(position=position, token_id=0, prob=case.probs[t], layers=reduced))
    return finished(method, tokens, case.n_layers, layers, case.positions)


def finished(method: Glimpse, tokens: list[TokenTrace], n_layers: int, layers: list[int],
             pos: Positions) -> tuple[MethodResult, list[dict]]:
    for token in tokens:  # as capture calls it, right after each token's backward pass
        method.finish_token(token, layers, n_layers, frozenset())
    result = method.combine(Trace(tokens=tokens, n_layers=n_layers, layers=layers), pos.layout())
    return result, [token.summary for token in tokens]


# --- block-wise inputs -----------------------------------------------------------------------------

# Q and K: any floats in [-2, 2]. V and dO on a grid of 1/8 (|x| <= 2): dz/dA = dO V^T is then exact in
# float32 as in float64, so the two paths see the same ReLU(g) pattern (a rounding error's sign at a
# zero gradient would decide whether a row of E is 0 or normalised to 1).
PROJECTIONS = st.floats(-2, 2, allow_subnormal=False, width=32)
GRID_STEPS, GRID_STEP = 16, 1 / 8
GRID = st.integers(-GRID_STEPS, GRID_STEPS)
MASKS = (None, "bool", "additive")


@dataclass(frozen=True)
class Streams:
    """What block-wise capture keeps per layer: Q [L, H, N, D], K and V [L, Hkv, N, D] (float64;
    H = 2 Hkv) and, per answer token t, dO[t] = dz_t/d(attention output) [L, H, N, D], with the
    causal mask given as `mask` (None: implicit causal, "bool" or "additive": explicit)."""

    positions: Positions
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    grad_output: torch.Tensor
    probs: tuple[float, ...]
    mask: str | None

    @property
    def n_layers(self) -> int:
        return self.query.shape[0]

    def causal_mask(self, kind: str | None) -> torch.Tensor | None:
        n = self.positions.length
        allowed = torch.ones(n, n, dtype=torch.bool).tril()[None]
        if kind == "bool":
            return allowed
        if kind == "additive":
            return torch.zeros(1, n, n, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float32).min)
        return None

    def layer(self, l: int, t: int, mask: str | None = "own") -> LayerAttention:
        """Layer l's inputs with answer token t's dO (rows 0..query), with this case's mask or `mask`."""
        query = self.positions.queries[t]
        return LayerAttention(self.query[l], self.key[l], self.value[l], self.causal_mask(self.mask if mask == "own" else mask),
                              self.query.shape[-1] ** -0.5, causal=True,
                              grad_output=self.grad_output[t, l, :, : query + 1])


@st.composite
def streams(draw: st.DrawFn, max_layers: int = 3) -> Streams:
    pos = draw(positions(max_image=3))
    n_layers, kv, dim = draw(st.integers(1, max_layers)), draw(st.sampled_from([1, 2])), draw(st.integers(1, 4))
    n, heads = pos.length, 2 * kv
    query, key = (draw(values(shape, PROJECTIONS, np.float32, -2, 2)).astype(np.float64)
                  for shape in ((n_layers, heads, n, dim), (n_layers, kv, n, dim)))
    value, grad_output = (draw(values(shape, GRID, np.int8, -GRID_STEPS, GRID_STEPS)) * GRID_STEP
                          for shape in ((n_layers, kv, n, dim), (pos.answer, n_layers, heads, n, dim)))
    probs = tuple(draw(st.lists(PROBS, min_size=pos.answer, max_size=pos.answer)))
    return Streams(pos, *(torch.from_numpy(x) for x in (query, key, value, grad_output)), probs, draw(st.sampled_from(MASKS)))


def explain_blockwise(case: Streams, method: Glimpse | None = None) -> tuple[MethodResult, list[dict]]:
    """GLIMPSE on attention recomputed in row blocks (`reduce_blocks`, the streamed sweep)."""
    method = method or Glimpse()
    layers = method.layers(case.n_layers)
    tokens = [TokenTrace(position=position, token_id=0, prob=case.probs[t],
                         layers={l: method.reduce_blocks(case.layer(l, t), query) for l in layers})
              for t, (position, query) in enumerate(zip(case.positions.answer_positions, case.positions.queries))]
    return finished(method, tokens, case.n_layers, layers, case.positions)


def reference_maps(pos: Positions, attn: torch.Tensor, grads: torch.Tensor, probs: tuple[float, ...],
                   head_lambda: float = 0.5, depth_lambda: float = 0.2) -> dict[str, torch.Tensor]:
    """Steps 1-5 by tests/reference.py (float64, full N x N propagation) on A [L, H, N, N] and
    G [T, L, H, N, N], every layer used, token weighting "full"."""
    layers = list(range(attn.shape[0]))
    prior = reference.depth_prior(layers, depth_lambda)
    rows, alphas, heads = [], [], []
    for t, query in enumerate(pos.queries):
        fused = [reference.head_fusion(attn[l].double(), grads[t, l].double(), head_lambda) for l in layers]
        evidence = torch.stack([reference.layer_evidence(grads[t, l].double()) for l in layers])
        alphas.append(reference.layer_weights(evidence, prior))
        heads.append(torch.stack([w for _, w in fused]))
        rows.append(reference.propagate([e for e, _ in fused], alphas[-1])[query])
    rows = torch.stack(rows)
    token_visual, token_prompt = rows[:, pos.image_positions], rows[:, pos.prompt_positions]
    beta_visual, beta_prompt = reference.token_weights(torch.tensor(probs, dtype=torch.float64), token_prompt.mean(1),
                                                       token_visual.mean(1), "full")
    return {"token_visual": token_visual, "token_prompt": token_prompt, "visual": beta_visual @ token_visual,
            "prompt": beta_prompt @ token_prompt, "token_weights": beta_visual, "beta_prompt": beta_prompt,
            "gamma": beta_visual * beta_prompt, "alpha": torch.stack(alphas), "head_weights": torch.stack(heads)}


def outputs(result: MethodResult) -> dict[str, torch.Tensor]:
    """Every map and weight of a GLIMPSE result, by name (the reference's names)."""
    core = {name: getattr(result, name) for name in ("token_visual", "token_prompt", "visual", "prompt", "token_weights")}
    return {**core, **{name: result.details[name] for name in ("alpha", "head_weights", "beta_prompt", "gamma")}}
