"""GLIMPSE (arXiv 2506.18985): gradient-weighted attention, adaptive layer propagation and
relevance-weighted token aggregation. Equations follow docs/method.md (Steps 1-5).

Models whose image enters only through cross-attention layers (Mllama) are explained by GLIMPSE's
own rules applied to the joint graph of sequence positions and vision keys (DECISION, argued in
docs/method-notes.md): a cross-attention layer's fused matrix E^x_l ([rows, vision keys], Steps 1-2
unchanged) moves relevance from a text row to the vision keys, while the vision keys themselves
never change inside the language model. Carrying row t down through the layers, a self-attention
layer updates the sequence row as always and a cross-attention layer adds alpha^l/2 * (r E^x_l) to
the vision-key row; layer evidence, depth prior and alpha range over all layers by their true
index. Without cross-attention layers every step is ordinary GLIMPSE, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from ..blocks import LayerAttention
from ..capture import TokenTrace, Trace
from ..errors import OptionError, note
from ..layout import SequenceLayout
from ..resources import available_memory
from .base import SINKS_HELP, AttentionMethod, MethodResult
from .glimpse_blocks import EPS, fused_product, propagate_streamed

WEIGHTINGS = ("full", "confidence", "prompt", "uniform")
# The paper tuned depth_lambda = 0.2 on a 64-layer model; depth_scale="auto" keeps the prior's total
# tilt across the stack the same for L layers: depth_lambda * 64 / L.
REFERENCE_DEPTH = 64
PATHS = ("auto", "blockwise", "full_matrix")
# path="auto" recomputes attention block-wise from this many language-model positions on. Measured
# by benchmarks/exact.py (benchmarks/results/exact-cpu.txt): at N = 599 block-wise took 6.8 s and 301 MB
# against 7.3 s and 470 MB for explicit matrices, at N = 1,175 18.7 s against 33.9 s; shorter sequences,
# where both are fast, keep explicit matrices.
BLOCKWISE_FROM = 512


class Glimpse(AttentionMethod):
    name = "glimpse"
    summary = "Gradient-weighted attention propagated over layers with a depth prior, tokens weighted by relevance"
    paper = "Shen 2025, GLIMPSE: Holistic Cross-Modal Explainability for Large Generative VLMs (arXiv 2506.18985)"
    cross_attention = True
    options = {
        "head_lambda": "head-fusion temperature lambda (> 0): lower picks the most gradient-coherent heads",
        "depth_lambda": "depth-prior strength lambda_d: deeper layers weigh more",
        "layer_fraction": "propagate through this last fraction of the layers, in (0, 1]",
        "token_weighting": f"how answer tokens weigh into the holistic maps: {' | '.join(WEIGHTINGS)}",
        "exclude_sinks": SINKS_HELP,
        "depth_scale": "None, or 'auto': depth_lambda * 64 / layers (the paper tuned depth_lambda on 64 layers)",
        "path": ("blockwise: the model keeps its sdpa attention and A, dz/dA are recomputed in row blocks (memory "
                 "linear in the sequence length); full_matrix: explicit N x N attention; auto: blockwise from "
                 f"{BLOCKWISE_FROM} positions on (same maths, same maps)"),
        "max_memory": ("GiB that batched backward passes (several answer tokens in one, block-wise path only) may "
                       "use, at most what is available; None or 0: one token at a time (batching was slower on CPU: "
                       "benchmarks/exact.py, job batched)"),
    }
    details = {
        "alpha": "[T, layers] per-token layer weights alpha^l (Step 3)",
        "head_weights": "[T, layers, heads] per-token head-fusion weights w_l^h (Step 2)",
        "beta_prompt": "[T] token weights of the holistic prompt map beta^P (Step 4; beta^V is token_weights)",
        "gamma": "[T] joint token relevance beta^V * beta^P (Step 4), by which answer tokens are ranked",
    }
    token_ranking = "gamma = beta^V * beta^P, GLIMPSE's joint token relevance"

    def __init__(self, head_lambda: float = 0.5, depth_lambda: float = 0.2, layer_fraction: float = 1.0,
                 token_weighting: str = "full", exclude_sinks: bool = False, depth_scale: str | None = None,
                 path: str = "auto", max_memory: float | None = None) -> None:
        super().__init__(exclude_sinks)
        if max_memory is not None and max_memory < 0:
            raise OptionError(f"max_memory must be >= 0 (GiB) or None, got {max_memory}")
        self.max_memory = max_memory
        if path not in PATHS:
            raise OptionError(f"path must be one of {', '.join(PATHS)}, got {path!r}")
        self.path = path
        if depth_scale not in (None, "auto"):
            raise OptionError(f"depth_scale must be None or 'auto', got {depth_scale!r}")
        self.depth_scale = depth_scale
        if head_lambda <= 0:
            raise OptionError(f"head_lambda must be > 0, got {head_lambda}")
        if not 0 < layer_fraction <= 1:
            raise OptionError(f"layer_fraction must be in (0, 1], got {layer_fraction}")
        if token_weighting not in WEIGHTINGS:
            raise OptionError(f"token_weighting must be one of {', '.join(WEIGHTINGS)}, got {token_weighting!r}")
        self.head_lambda = head_lambda
        self.depth_lambda = depth_lambda
        self.layer_fraction = layer_fraction
        self.token_weighting = token_weighting

    def effective_depth_lambda(self, n_layers: int) -> float:
        """depth_lambda, or with depth_scale="auto" depth_lambda * 64 / n_layers (the whole model's depth)."""
        return self.depth_lambda * REFERENCE_DEPTH / n_layers if self.depth_scale == "auto" else self.depth_lambda

    def layers(self, n_layers: int) -> list[int]:
        n = max(1, math.ceil(self.layer_fraction * n_layers))
        return list(range(n_layers - n, n_layers))

    def blockwise(self, model: Any, n_positions: int) -> bool:
        if self.path != "auto":
            return self.path == "blockwise"
        config = getattr(model.config, "text_config", model.config)
        # sdpa cannot cap attention logits (Gemma 2's softcap): such models keep explicit matrices.
        return n_positions >= BLOCKWISE_FROM and getattr(config, "attn_logit_softcapping", None) is None

    def reduce_blocks(self, attention: LayerAttention, query: int) -> dict[str, Any]:
        # Everything is computed in `token_state` (exact) or `blockwise_states` (fast), from the last layer down.
        return {"attention": attention}

    def token_batch(self, model: Any, layout: SequenceLayout, layers: list[int]) -> int:
        """As many answer tokens per batched backward pass as `max_memory` holds, by an estimate of
        one token's share: every explained layer's output gradient, plus the transient gradients of
        one decoder layer's backward (MLP intermediate and attention projections)."""
        if not self.max_memory:
            return 1
        budget = min(self.max_memory * 2**30, available_memory(model.device) or float("inf"))
        config = getattr(model.config, "text_config", model.config)
        hidden = int(config.hidden_size)
        width = len(layers) * hidden + 4 * int(getattr(config, "intermediate_size", 4 * hidden)) + 8 * hidden
        per_token = 4 * layout.length * width
        return max(1, min(len(layout.answer), int(budget // per_token)))

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor, query: int) -> dict[str, torch.Tensor]:
        return self._reduce(attn, grad, query, causal=True)

    def reduce_cross_layer(self, attn: torch.Tensor, grad: torch.Tensor, query: int) -> dict[str, torch.Tensor]:
        return self._reduce(attn, grad, query, causal=False)

    def _reduce(self, attn: torch.Tensor, grad: torch.Tensor, query: int, causal: bool) -> dict[str, torch.Tensor]:
        # Rows after the query cannot influence its logit, so their gradient is exactly zero: keep rows
        # up to the query (all columns, since masked columns still carry gradient into the head sums).
        a, g = attn[:, : query + 1].float(), grad[:, : query + 1]
        return {**fuse_heads(a, g, self.head_lambda, causal), "evidence": g.sum(0).abs().sum()}

    def finish_token(self, token: TokenTrace, layers: list[int], n_layers: int, cross: frozenset[int]) -> None:
        # Steps 1-3 need only this token's layers: reducing them now keeps one token's fused matrices
        # alive at a time instead of every token's until `combine`.
        token.summary = self.token_state(token, layers, n_layers, cross)
        token.layers = {}

    def token_state(self, token: TokenTrace, layers: list[int], n_layers: int,
                    cross: frozenset[int]) -> dict[str, torch.Tensor]:
        """Steps 1-3 for one answer token: its propagated rows, layer weights and head weights."""
        if "attention" in token.layers[layers[0]]:  # block-wise: one top-down sweep
            attentions = {l: token.layers[l]["attention"] for l in layers}
            return self.swept_states(attentions, layers, n_layers, cross, token.query, [token.query])[0]
        alpha, heads, evidence = self.weights(token.layers, layers, n_layers)
        rows, keys = propagate(one_hot([token.query], token.query + 1, heads.device), layers, alpha,
                               layer_product(token.layers, token.query), cross)
        return {"row": rows[0].cpu(), "keys": None if keys is None else keys[0].cpu(), "alpha": alpha.cpu(),
                "head_weights": heads.cpu(), "no_evidence": not evidence.any()}

    def swept_states(self, attentions: dict[int, LayerAttention], layers: list[int], n_layers: int,
                     cross: frozenset[int], query: int, starts: list[int]) -> list[dict[str, torch.Tensor]]:
        """One state per start row, all carried through the layers' rows 0..query in one sweep
        (`propagate_streamed`)."""
        device = attentions[layers[0]].query.device
        prior = self.prior(layers, n_layers).to(device)
        swept = propagate_streamed(attentions, layers, query, self.head_lambda, prior, cross, starts)
        alpha = layer_weights(swept["evidence"], prior)
        rows, keys = swept["rows"], swept["keys"]
        if rows is None:  # no evidence anywhere: alpha is the prior, propagated with recomputed blocks
            reduced = {l: {"attention": attentions[l], "head_weights": swept["head_weights"][i]}
                       for i, l in enumerate(layers)}
            rows, keys = propagate(one_hot(starts, query + 1, device), layers, alpha, layer_product(reduced, query),
                                   cross)
        shared = {"alpha": alpha.cpu(), "head_weights": swept["head_weights"].cpu(),
                  "no_evidence": not swept["evidence"].any()}
        return [{"row": rows[i, : start + 1].cpu(), "keys": None if keys is None else keys[i].cpu(), **shared}
                for i, start in enumerate(starts)]

    def prior(self, layers: list[int], n_layers: int) -> torch.Tensor:
        """The depth prior s^l over the used layers of an `n_layers`-layer model."""
        return depth_prior(layers, self.effective_depth_lambda(n_layers))

    def weights(self, reduced: dict[int, dict[str, Any]], layers: list[int],
                n_layers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha [layers], head weights [layers, heads], layer evidence [layers]) of reduced layers."""
        evidence = torch.stack([reduced[l]["evidence"] for l in layers])
        prior = self.prior(layers, n_layers).to(evidence.device)
        heads = torch.stack([reduced[l]["head_weights"] for l in layers])
        return layer_weights(evidence, prior), heads, evidence

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        layers = trace.layers  # self.layers(trace.n_layers) less the layers without attention (hybrid models)
        cross = frozenset(trace.cross_layers)
        notes: list[str] = []
        if layout.cross_attention and not cross:
            note(notes, f"layer_fraction={self.layer_fraction} leaves out every cross-attention layer, the only "
                        "layers that carry the image: the image maps are zero")
        states = [token.summary or self.token_state(token, layers, trace.n_layers, cross) for token in trace.tokens]
        no_evidence = [t for t, state in enumerate(states) if state["no_evidence"]]
        if no_evidence:
            note(notes, f"answer token(s) {no_evidence}: no layer has gradient, so the layer weights are the depth prior")
        visual_idx = torch.tensor(layout.image_positions, dtype=torch.long)
        prompt_idx = torch.tensor(layout.prompt, dtype=torch.long)
        token_visual = torch.stack([visual_scores(state["row"], state["keys"], layout.cross_attention, visual_idx)
                                    for state in states])
        token_prompt = torch.stack([state["row"][prompt_idx] for state in states])
        probs = torch.tensor([t.prob for t in trace.tokens], dtype=torch.float32)
        weights = token_weights(probs, token_prompt.mean(1), token_visual.mean(1), self.token_weighting)
        for name, (_, uniform) in zip(("visual", "prompt"), weights):
            if uniform:
                note(notes, f"the {name} map's token weights ({self.token_weighting}) are all zero: "
                            "tokens are weighted uniformly")
        (beta_visual, _), (beta_prompt, _) = weights
        return MethodResult(
            token_visual=token_visual, token_prompt=token_prompt,
            visual=beta_visual @ token_visual, prompt=beta_prompt @ token_prompt, token_weights=beta_visual,
            layers=layers, notes=notes,
            details={"alpha": torch.stack([state["alpha"] for state in states]),
                     "head_weights": torch.stack([state["head_weights"] for state in states]), "beta_prompt": beta_prompt,
                     "gamma": beta_visual * beta_prompt})

    def rank_tokens(self, result: MethodResult) -> torch.Tensor:
        return result.details["gamma"]


class GlimpseFast(Glimpse):
    """An APPROXIMATION of GLIMPSE: one backward pass of the sum of the answer logits (sum_t z_t)
    instead of one per answer token.

    Every step is GLIMPSE's own (`fuse_heads`, `layer_weights`, `propagate`, `token_weights`), but
    the gradient-weighted attention, head weights and layer evidence are those of the summed
    logits, shared by all tokens: token t's row is propagated from its own query row t-1 through
    the shared fused matrices (cut to its causal prefix). The head and layer weights therefore mix
    the evidence of all tokens, so per-token maps differ from GLIMPSE's except for a one-token
    answer, where the two coincide. Cost: one backward instead of T.
    """

    name = "glimpse_fast"
    summary = "GLIMPSE approximated with one backward pass of the summed answer logits (fast, approximate)"
    paper = ("Shen 2025, GLIMPSE: Holistic Cross-Modal Explainability for Large Generative VLMs (arXiv 2506.18985); "
             "one-backward approximation")
    approximate = True
    gradients = "sum"

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        if any("attention" in reduced for reduced in trace.shared.values()):
            return super().combine(replace(trace, tokens=self.blockwise_states(trace)), layout)
        cross = set(trace.cross_layers)

        def prefix(layer: int, fused: torch.Tensor, query: int) -> torch.Tensor:
            # Token t's causal prefix; a cross-attention layer keeps all its columns (vision keys, not later positions).
            return fused[: query + 1] if layer in cross else fused[: query + 1, : query + 1]
        tokens = [replace(token, layers={layer: {**reduced, "fused": prefix(layer, reduced["fused"], token.query)}
                                         for layer, reduced in trace.shared.items()})
                  for token in trace.tokens]
        return super().combine(replace(trace, tokens=tokens), layout)

    def blockwise_states(self, trace: Trace) -> list[TokenTrace]:
        """Every token's summary from the shared block-wise layers, all rows carried at once: token
        t's row lives on its causal prefix and E_l maps a prefix onto itself, so propagating it
        through the whole shared E_l is the same as through E_l cut to the prefix."""
        layers, cross = trace.layers, frozenset(trace.cross_layers)
        attentions = {l: trace.shared[l]["attention"] for l in layers}
        states = self.swept_states(attentions, layers, trace.n_layers, cross, trace.tokens[-1].query,
                                   [t.query for t in trace.tokens])
        return [replace(token, summary=state) for token, state in zip(trace.tokens, states)]


def fuse_heads(attn: torch.Tensor, grad: torch.Tensor, head_lambda: float,
               causal: bool = True) -> dict[str, torch.Tensor]:
    """Steps 1-2: E = row-normalised sum_h w_h ReLU(g_h * A_h), w = softmax_h(coherence / lambda).

    `attn` and `grad` are [heads, rows, keys] with rows <= keys; E is [rows, rows] for causal
    self-attention and [rows, keys] for cross-attention (`causal=False`: the keys are vision tokens).
    """
    relu_grad = grad.clamp(min=0)
    weighted = relu_grad * attn  # = ReLU(g * A) since A >= 0
    coherence = weighted.sum((1, 2)) / relu_grad.sum((1, 2)).clamp(min=EPS)
    head_weights = torch.softmax(coherence / head_lambda, dim=0)
    # Columns past the last row are future keys: their attention, hence their evidence, is zero.
    fused = torch.einsum("h,hqk->qk", head_weights, weighted[:, :, : attn.shape[1]] if causal else weighted)
    row_sums = fused.sum(1, keepdim=True)
    fused = torch.where(row_sums > 0, fused / row_sums.clamp(min=EPS), torch.zeros_like(fused))
    return {"fused": fused, "head_weights": head_weights}


def depth_prior(layers: list[int], depth_lambda: float) -> torch.Tensor:
    """s^l = softmax over the used layers of depth_lambda * (l + 1): deeper layers weigh more."""
    return torch.softmax(depth_lambda * (torch.tensor(layers, dtype=torch.float32) + 1), dim=0)


def layer_weights(evidence: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """alpha^l = g^l s^l / sum_k g^k s^k, falling back to the prior when no layer has gradient."""
    weighted = evidence.float() * prior
    total = weighted.sum()
    return weighted / total if total > 0 else prior.clone()


Product = Callable[[int, torch.Tensor], torch.Tensor]


def layer_product(reduced: dict[int, dict[str, Any]], query: int) -> Product:
    """(layer, rows) -> rows @ E_l, from the explicit fused matrix or block-wise from the layer's inputs."""

    def product(layer: int, rows: torch.Tensor) -> torch.Tensor:
        kept = reduced[layer]
        if "fused" in kept:
            return rows @ kept["fused"].float().to(rows.device)
        return fused_product(rows, kept["attention"], kept["head_weights"], query)
    return product


def one_hot(queries: list[int], size: int, device: torch.device | None = None) -> torch.Tensor:
    rows = torch.zeros(len(queries), size, device=device)
    rows[torch.arange(len(queries)), torch.tensor(queries)] = 1.0
    return rows


def propagate(rows: torch.Tensor, layers: list[int], alpha: torch.Tensor, product: Product,
              cross: frozenset[int] = frozenset()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of R = prod_l (2I + alpha^l E_l), scaled by 2^-n, carried as row vectors from `rows`
    (one-hot at the query rows) with `product(layer, rows)` = rows @ E_l.

    Each step halves (r <- r + alpha/2 * r E) so the 2^-n rescale is applied as it goes.
    R lives on sequence positions + vision keys: a cross-attention layer l (in `cross`) has
    E_l = [[0, E^x_l], [0, 0]] there (text rows to vision keys) and every vision key's own row is
    the identity, so the step leaves the sequence row as it is and adds alpha/2 * r E^x_l to the
    vision-key row. Returns (sequence rows, vision-key rows or None without cross-attention layers).
    """
    keys = None
    for layer, a in zip(reversed(layers), reversed(alpha.tolist())):
        step = 0.5 * a * product(layer, rows)
        if layer in cross:
            keys = step if keys is None else keys + step
        else:
            rows = rows + step
    return rows, keys


def visual_scores(row: torch.Tensor, keys: torch.Tensor | None, cross_attention: bool,
                  index: torch.Tensor) -> torch.Tensor:
    """r_t[V]: off the sequence row, or off the vision-key row when V are cross-attention keys (zero
    when the layers used hold no cross-attention layer: no path reaches the image then)."""
    if not cross_attention:
        return row[index]
    return torch.zeros(len(index)) if keys is None else keys[index]


def token_weights(probs: torch.Tensor, prompt_align: torch.Tensor, visual_align: torch.Tensor,
                  mode: str) -> tuple[tuple[torch.Tensor, bool], tuple[torch.Tensor, bool]]:
    """Step 4: beta^V (weights the visual map) and beta^P (weights the prompt map), each with
    whether it fell back to uniform weights (all raw weights zero).

    In "full" mode they cross on purpose: the visual map weighs a token by its prompt alignment
    and the prompt map by its visual alignment, each times the token's probability.
    """
    ones = torch.ones_like(probs)
    weights = {
        "full": (probs * prompt_align, probs * visual_align),
        "confidence": (probs, probs),
        "prompt": (prompt_align, visual_align),
        "uniform": (ones, ones),
    }[mode]
    return normalise(weights[0]), normalise(weights[1])


def normalise(weights: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Weights divided by their sum, or uniform (and True) when they sum to zero."""
    total = weights.sum()
    if total > 0:
        return weights / total, False
    return torch.full_like(weights, 1.0 / len(weights)), True
