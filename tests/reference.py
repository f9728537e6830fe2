"""Float64 reference implementation of GLIMPSE, written as directly as possible from docs/method.md.

This is the independent ground truth the library is compared against. It deliberately does everything the
slow, obvious way: a float64 deep copy of the model, eager attention for every layer, full N x N attention
matrices and gradients, one backward pass per answer token, full N x N propagation matrices. No streaming, no
row-vector tricks, no batching of answer tokens.

Precision note (transformers 5.24, ``models/llama/modeling_llama.py::eager_attention_forward``)::

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling      # float64 here
    attn_weights = attn_weights + attention_mask                                 # float64 (mask = finfo.min)
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)

``softmax(..., dtype=torch.float32)`` first casts the float64 scores to float32 (the float64 mask value
``finfo(float64).min`` becomes ``-inf``, so masked entries are exactly 0), runs the softmax in float32 and the
``.to(query.dtype)`` casts the result back to float64 (checked: the returned A equals A.float().double()
exactly and rows sum to 1 within ~1e-7). So in a ``.double()`` model the attention weights A we
read are float64 tensors holding float32-rounded values (rows sum to 1 only to ~1e-7), and in the backward pass
every layer's softmax backward also runs in float32 (grad cast float64 -> float32 -> softmax backward ->
float64). Hence dz/dA of the LAST layer is computed in float64 end to end, while dz/dA of earlier layers has
passed through float32 softmax backwards of the later layers. Everything else (projections, RoPE, MLPs,
norms, logits, and all GLIMPSE arithmetic below) is float64. The reference's precision is therefore float32's
where the softmax is concerned (relative error ~1e-7), which is ample for Pearson r >= 0.9999 comparisons.
The CLIP vision tower's eager attention does the same (softmax in float32).
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

MODES = ("full", "confidence", "prompt", "uniform")
EPS = 1e-12


# ----------------------------------------------------------------------------------------------- small pieces

def used_layers(num_layers: int, layer_fraction: float = 1.0) -> list[int]:
    """The n = max(1, ceil(layer_fraction * L)) LAST layers, absolute 0-based indices, increasing."""
    n = max(1, math.ceil(layer_fraction * num_layers))
    n = min(n, num_layers)
    return list(range(num_layers - n, num_layers))


def depth_prior(layers: list[int], depth_lambda: float = 0.2) -> torch.Tensor:
    """s^l = softmax over the used layers of depth_lambda * (l + 1)  (l = absolute 0-based layer index)."""
    x = torch.tensor([depth_lambda * (l + 1) for l in layers], dtype=torch.float64)
    return torch.softmax(x, dim=0)


def layer_weights(evidence: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """alpha^l = g^l s^l / sum_k g^k s^k ; alpha = s when every g^l is 0."""
    evidence = evidence.to(torch.float64)
    prior = prior.to(torch.float64)
    total = (evidence * prior).sum()
    if total == 0:
        return prior.clone()
    return evidence * prior / total


def layer_evidence(grad: torch.Tensor) -> torch.Tensor:
    """g^l = || sum_h g_l^h ||_1 over the whole N x N matrix (heads summed before the norm). grad: [H, N, N]."""
    return grad.sum(dim=0).abs().sum()


def head_fusion(attn: torch.Tensor, grad: torch.Tensor, head_lambda: float = 0.5):
    """Steps 1-2 for one layer. attn, grad: [H, N, N] float64.

    G^h = ReLU(g^h * A^h);  w^h = softmax_h( (1/lambda) * sum(G^h) / max(eps, sum(ReLU(g^h))) );
    E = sum_h w^h G^h, then every row divided by its row sum (rows that sum to 0 stay 0).
    Returns (E [N, N], w [H]).
    """
    G = torch.relu(grad * attn)
    scores = torch.zeros(G.shape[0], dtype=torch.float64)
    for h in range(G.shape[0]):
        scores[h] = G[h].sum() / max(EPS, torch.relu(grad[h]).sum().item())
    w = torch.softmax(scores / head_lambda, dim=0)
    E = torch.zeros_like(G[0])
    for h in range(G.shape[0]):
        E = E + w[h] * G[h]
    row_sums = E.sum(dim=1, keepdim=True)
    E = torch.where(row_sums > 0, E / torch.where(row_sums > 0, row_sums, torch.ones_like(row_sums)),
                    torch.zeros_like(E))
    return E, w


def propagate(E_list: list[torch.Tensor], alphas: torch.Tensor) -> torch.Tensor:
    """R = I; for the used layers in increasing order: R = R + (I + alpha^l E_l) @ R; then R * 2^-n."""
    N = E_list[0].shape[0]
    I = torch.eye(N, dtype=torch.float64)
    R = I.clone()
    for E, a in zip(E_list, alphas):
        R = R + (I + a * E) @ R
    return R * 2.0 ** (-len(E_list))


def token_weights(probs: torch.Tensor, a: torch.Tensor, v: torch.Tensor, mode: str = "full"):
    """beta^V, beta^P (each [T], summing to 1) for the given mode; a zero normaliser gives uniform 1/T."""
    T = probs.shape[0]

    def normalise(x):
        s = x.sum()
        if s == 0:
            return torch.full((T,), 1.0 / T, dtype=torch.float64)
        return x / s

    if mode == "full":
        return normalise(probs * a), normalise(probs * v)   # crossed on purpose: a weights the VISUAL map
    if mode == "confidence":
        return normalise(probs.clone()), normalise(probs.clone())
    if mode == "prompt":
        return normalise(a.clone()), normalise(v.clone())
    if mode == "uniform":
        u = torch.full((T,), 1.0 / T, dtype=torch.float64)
        return u, u.clone()
    raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


# ----------------------------------------------------------------------------------------------- model part

def float64_copy(model):
    """Deep copy of the model in float64 with eager attention everywhere (the caller's model is untouched)."""
    m = copy.deepcopy(model).double()
    m.set_attn_implementation("eager")
    m.eval()
    m.requires_grad_(True)   # so the attentions are part of the autograd graph even if the caller froze the model
    return m


def to_float64_inputs(inputs: dict) -> dict:
    out = {}
    for k, v in inputs.items():
        if torch.is_tensor(v) and v.is_floating_point():
            v = v.to(torch.float64)
        out[k] = v
    return out


def num_lm_layers(model) -> int:
    return model.config.get_text_config().num_hidden_layers


def forward_with_attentions(m64, inputs64: dict, bidirectional: torch.Tensor | None = None):
    """Teacher-forced forward with eager attentions; every attention [1, H, N, N] gets retain_grad().

    Checks that all LM layers returned an attention and that they are causal (upper triangle exactly 0), except
    at the (query, key) pairs where ``bidirectional`` (boolean [N, N], e.g. a prefix-LM's prefix) allows a later key.
    """
    out = m64(**inputs64, output_attentions=True, use_cache=False)
    attns = list(out.attentions)
    L = num_lm_layers(m64)
    assert len(attns) == L, f"expected {L} attention tensors, got {len(attns)} (eager attention not active?)"
    for A in attns:
        assert A.dim() == 4 and A.shape[0] == 1 and A.shape[-1] == A.shape[-2], A.shape
        assert A.dtype == torch.float64
        assert A.requires_grad, "attention does not require grad"
        future = torch.triu(A[0], diagonal=1)
        if bidirectional is not None:
            future = future.masked_fill(bidirectional.to(future.device), 0.0)
        assert torch.all(future == 0), "attention is not causal"
        A.retain_grad()
    return out, attns


def attention_grads(logit: torch.Tensor, attns: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zero the retained grads, backward one logit (retain_graph), return dlogit/dA per layer, each [H, N, N]."""
    for A in attns:
        A.grad = None
    logit.backward(retain_graph=True)
    grads = []
    for A in attns:
        g = A.grad if A.grad is not None else torch.zeros_like(A)
        grads.append(g[0].detach().clone())
    return grads


# ----------------------------------------------------------------------------------------------- the method

def reference_glimpse(model, inputs: dict, answer_positions: list[int], image_positions: list[int],
                      prompt_positions: list[int], *, head_lambda: float = 0.5, depth_lambda: float = 0.2,
                      layer_fraction: float = 1.0, mode: str = "full", query_offset: int = 1,
                      summed_gradients: bool = False, sinks: tuple[int, ...] = (),
                      bidirectional: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
    """GLIMPSE for ONE teacher-forced sequence (batch 1), float64, full matrices.

    inputs: model inputs (input_ids [1, N] already containing the answer tokens, attention_mask, pixel_values,
    any other processor keys). The logit of answer token t is z_t = logits[0, pos_t - 1, input_ids[0, pos_t]].
    ``query_offset`` (default 1, the method) selects which row of R is read: r_t = R[pos_t - query_offset]; it
    exists only so a test can show that reading the token's own row (query_offset=0) gives an all-zero image map.
    ``summed_gradients`` (the glimpse_fast approximation): every token uses dA of sum_t z_t instead of dz_t/dA.
    ``sinks`` (exclude_sinks): these key columns of every attention matrix are set to 0 before head fusion.
    ``bidirectional`` (boolean [N, N]): the (query, key) pairs where the model may attend to a later key (a
    prefix-LM's prefix, Gemma 3's image blocks); the causality check accepts those and nothing else. The maths is
    unchanged: full N x N matrices, whatever their upper triangle holds.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    V = list(image_positions)
    P = list(prompt_positions)
    Y = list(answer_positions)
    T = len(Y)

    m64 = float64_copy(model)
    inputs64 = to_float64_inputs(inputs)
    input_ids = inputs64["input_ids"]
    assert input_ids.shape[0] == 1, "reference works on one sequence"
    N = input_ids.shape[1]

    # Passed only when given, so that wrappers of the two-argument form (test_qwen_adapter) keep working.
    allowance = {} if bidirectional is None else {"bidirectional": bidirectional}
    out, attns = forward_with_attentions(m64, inputs64, **allowance)
    logits = out.logits[0]                                   # [N, vocab] float64
    L = len(attns)
    layers = used_layers(L, layer_fraction)
    n = len(layers)
    H = attns[0].shape[1]
    prior = depth_prior(layers, depth_lambda)

    token_visual = torch.zeros(T, len(V), dtype=torch.float64)
    token_prompt = torch.zeros(T, len(P), dtype=torch.float64)
    alpha_all = torch.zeros(T, n, dtype=torch.float64)
    head_w_all = torch.zeros(T, n, H, dtype=torch.float64)
    probs = torch.zeros(T, dtype=torch.float64)
    z_all = torch.zeros(T, dtype=torch.float64)
    a = torch.zeros(T, dtype=torch.float64)
    v = torch.zeros(T, dtype=torch.float64)

    if summed_gradients:
        total = sum(logits[pos - 1, int(input_ids[0, pos])] for pos in Y)
        summed = attention_grads(total, attns)

    for t, pos in enumerate(Y):
        y = int(input_ids[0, pos])
        z = logits[pos - 1, y]                               # raw logit of y_t, query row pos - 1
        grads = summed if summed_gradients else attention_grads(z, attns)
        z_all[t] = z.detach()
        probs[t] = torch.softmax(logits[pos - 1].detach(), dim=-1)[y]

        E_list, evidence = [], torch.zeros(n, dtype=torch.float64)
        for i, l in enumerate(layers):
            A_l = attns[l][0].detach().clone()               # [H, N, N]
            A_l[:, :, list(sinks)] = 0.0
            g_l = grads[l]                                   # [H, N, N]
            E, w = head_fusion(A_l, g_l, head_lambda)
            E_list.append(E)
            head_w_all[t, i] = w
            evidence[i] = layer_evidence(g_l)
        alpha = layer_weights(evidence, prior)
        alpha_all[t] = alpha

        R = propagate(E_list, alpha)                         # [N, N]
        r = R[pos - query_offset]                            # the propagated row of answer token t
        token_visual[t] = r[V]
        token_prompt[t] = r[P]
        a[t] = r[P].mean() if P else 0.0
        v[t] = r[V].mean() if V else 0.0
        assert R.shape == (N, N)

    beta_visual, beta_prompt = token_weights(probs, a, v, mode)
    gamma = beta_visual * beta_prompt
    visual = (beta_visual[:, None] * token_visual).sum(dim=0)
    prompt = (beta_prompt[:, None] * token_prompt).sum(dim=0)

    return {
        "token_visual": token_visual,
        "token_prompt": token_prompt,
        "alpha": alpha_all,
        "head_weights": head_w_all,
        "beta_visual": beta_visual,
        "token_weights": beta_visual,  # the result's name for beta^V: the holistic image map's token weights
        "beta_prompt": beta_prompt,
        "gamma": gamma,
        "probs": probs,
        "logits": z_all,
        "prompt_alignment": a,
        "visual_alignment": v,
        "visual": visual,
        "prompt": prompt,
        "layers": torch.tensor(layers, dtype=torch.long),
    }


def named_like_reference(explanation) -> dict:
    """The explanation's arrays under the reference's (the paper's) names: the core arrays, GLIMPSE's
    beta^V as `beta_visual` (the result's `token_weights`) and the method's own section (alpha, gamma, ...)."""
    core = ("token_visual", "token_prompt", "visual", "prompt", "probs", "token_weights")
    return {**{name: getattr(explanation, name) for name in core}, "beta_visual": explanation.token_weights,
            **explanation.details}


# ----------------------------------------------------------------------------------------------- comparisons

def assert_match(ours: np.ndarray, ref: torch.Tensor, name: str, atol: float = 1e-6) -> None:
    """Close values (rtol 2e-3, `atol` relative to the reference's largest magnitude) and Pearson r >= 0.9999."""
    ref = ref.detach().numpy().astype(np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    assert np.allclose(ours, ref, rtol=2e-3, atol=atol * max(1.0, np.abs(ref).max())), f"{name} differs"
    flat_ours, flat_ref = ours.ravel(), ref.ravel()
    if flat_ref.size >= 3 and flat_ref.std() > 1e-9 * max(1.0, np.abs(flat_ref).max()):
        r = np.corrcoef(flat_ours, flat_ref)[0, 1]
        assert r >= 0.9999, f"{name}: Pearson r = {r:.6f}"


def independent_positions(processor, ids: list[int], question: str) -> tuple[list[int], list[int]]:
    tok = processor.tokenizer
    image = [i for i, t in enumerate(ids) if t == tok.image_token_id]
    q_ids = tok.encode(question, add_special_tokens=False)
    for start in range(len(ids) - len(q_ids), -1, -1):
        if ids[start:start + len(q_ids)] == q_ids:
            return image, list(range(start, start + len(q_ids)))
    raise AssertionError("question not found in the prompt ids")


def reference_inputs(processor, explanation, question):
    """The explanation's teacher-forced inputs rebuilt from the processor, with Y, V and P found independently."""
    image = explanation.images[0]
    prompt_text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True)
    enc = dict(processor(images=image, text=prompt_text, return_tensors="pt"))
    prompt_ids = enc["input_ids"][0].tolist()
    ids = torch.tensor([prompt_ids + explanation.answer_token_ids])
    inputs = dict(enc, input_ids=ids, attention_mask=torch.ones_like(ids))
    V, P = independent_positions(processor, prompt_ids, question)
    Y = list(range(len(prompt_ids), ids.shape[1]))
    return inputs, Y, V, P
