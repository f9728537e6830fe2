"""Float64 references for the baseline methods, written directly from their definitions.

Like tests/reference.py (GLIMPSE's reference, whose float64 model copy and attention helpers are reused
here): a float64 deep copy of the model, eager attention, full N x N matrices, one backward pass per answer
token, no batching, no row-vector tricks. Pixel blocks are rebuilt from the config (patch size), never from
the library's adapter, and path integrals are explicit loops over the quadrature points.

Every function takes the teacher-forced inputs (input_ids [1, N] with the answer appended), the answer
positions Y, image positions V and question positions P, and returns a dict of float64 tensors named like
the explanation's arrays. Answer token t is always read at its query row Y[t] - 1.
"""
from __future__ import annotations

import numpy as np
import torch

from reference import attention_grads, float64_copy, forward_with_attentions, to_float64_inputs


def _per_token(token_visual: torch.Tensor, token_prompt: torch.Tensor, weight: float) -> dict[str, torch.Tensor]:
    """Holistic maps with the same weight for every token (1/T: mean, 1: sum)."""
    T = token_visual.shape[0]
    beta = torch.full((T,), weight, dtype=torch.float64)
    return {"token_visual": token_visual, "token_prompt": token_prompt, "visual": beta @ token_visual,
            "prompt": beta @ token_prompt, "token_weights": beta}


def _rows(R_rows: list[torch.Tensor], V: list[int], P: list[int]) -> dict[str, torch.Tensor]:
    tv = torch.stack([r[V] for r in R_rows])
    tp = torch.stack([r[P] for r in R_rows])
    return _per_token(tv, tp, 1.0 / len(R_rows))


def _attention(model, inputs):
    m64 = float64_copy(model)
    out, attns = forward_with_attentions(m64, to_float64_inputs(inputs))
    return out, attns


def _drop(A: torch.Tensor, sinks) -> torch.Tensor:
    A = A.detach().clone()
    A[..., list(sinks)] = 0.0
    return A


# ----------------------------------------------------------------------------------------------- attention

def ref_raw_attention(model, inputs, Y, V, P, layer=None, sinks=()):
    _, attns = _attention(model, inputs)
    L = len(attns)
    layers = range(L) if layer is None else [layer % L]
    M = sum(_drop(attns[l][0], sinks).mean(0) for l in layers) / len(layers)
    return _rows([M[pos - 1] for pos in Y], V, P)


def ref_rollout_matrix(model, inputs, sinks=()):
    """R = A'_L ... A'_1 with A' = (0.5 A + 0.5 I) / row sums, A the head mean."""
    _, attns = _attention(model, inputs)
    N = attns[0].shape[-1]
    I = torch.eye(N, dtype=torch.float64)
    R = I.clone()
    for A in attns:
        Am = 0.5 * _drop(A[0], sinks).mean(0) + 0.5 * I
        Am = Am / Am.sum(1, keepdim=True)
        R = Am @ R
    return R


def ref_rollout(model, inputs, Y, V, P, sinks=()):
    R = ref_rollout_matrix(model, inputs, sinks)
    return _rows([R[pos - 1] for pos in Y], V, P)


def _grad_weighted(model, inputs, Y, sinks):
    """For every answer token: [mean_h ReLU(dz_t/dA_l * A_l) for every layer l] (full N x N)."""
    out, attns = _attention(model, inputs)
    logits = out.logits[0]
    ids = inputs["input_ids"][0]
    per_token = []
    for pos in Y:
        grads = attention_grads(logits[pos - 1, int(ids[pos])], attns)
        per_token.append([torch.relu(g * _drop(A[0], sinks)).mean(0) for g, A in zip(grads, attns)])
    return per_token


def ref_gradcam_attn(model, inputs, Y, V, P, layer=-1, sinks=()):
    per_token = _grad_weighted(model, inputs, Y, sinks)
    return _rows([maps[layer][pos - 1] for maps, pos in zip(per_token, Y)], V, P)


def ref_gae(model, inputs, Y, V, P, sinks=()):
    """Chefer et al.: R = I; R <- R + Abar_l R for l = 1..L."""
    rows = []
    for maps, pos in zip(_grad_weighted(model, inputs, Y, sinks), Y):
        R = torch.eye(maps[0].shape[0], dtype=torch.float64)
        for Abar in maps:
            R = R + Abar @ R
        rows.append(R[pos - 1])
    return _rows(rows, V, P)


# ----------------------------------------------------------------------------------------------- TAM

def _reflect(i: int, n: int) -> int:
    """numpy 'reflect' padding index (the edge is not repeated)."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def ref_rank_gaussian_filter(grid: torch.Tensor, k: int = 3) -> torch.Tensor:
    rows, cols = grid.shape
    out = torch.zeros_like(grid)
    half = k // 2
    ranks = torch.arange(k * k, dtype=torch.float64) - (k * k) // 2
    for i in range(rows):
        for j in range(cols):
            window = torch.tensor([float(grid[_reflect(i + di, rows), _reflect(j + dj, cols)])
                                   for di in range(-half, half + 1) for dj in range(-half, half + 1)],
                                  dtype=torch.float64)
            values = torch.sort(window).values
            mean = values.mean()
            if mean <= 0:
                continue
            sigma = torch.sqrt(((values - mean) ** 2).mean()) / mean
            if sigma == 0:
                out[i, j] = mean
                continue
            kernel = torch.exp(-ranks ** 2 / (2 * sigma ** 2))
            out[i, j] = (values * kernel).sum() / kernel.sum()
    return out


def ref_tam(model, inputs, Y, V, P, grid, causal_inference=True, kernel_size=3):
    """TAM from the float64 model's full logits: a_c[i] = logits[i, c]."""
    m64 = float64_copy(model)
    with torch.no_grad():
        logits = m64(**to_float64_inputs(inputs), use_cache=False).logits[0]
    ids = inputs["input_ids"][0]
    maps, prompts = [], []
    for t, pos in enumerate(Y):
        c = int(ids[pos])
        a = logits[:, c]
        m = torch.relu(a[V])
        if causal_inference:
            context = [(int(ids[p]), p) for p in P] + [(int(ids[q]), q - 1) for q in Y[:t]]
            context = [(x, row) for x, row in context if x != c]
            weights = torch.tensor([float(torch.relu(a[row])) for _, row in context], dtype=torch.float64)
            if context and weights.sum() > 0:
                interference = sum(w * torch.relu(logits[V, x]) for w, (x, _) in zip(weights / weights.sum(), context))
                if float(interference @ interference) > 0:
                    scale = torch.linalg.lstsq(interference[:, None], m[:, None]).solution[0, 0]
                    m = torch.relu(m - scale * interference)
        rows, cols = grid
        maps.append(ref_rank_gaussian_filter(m.reshape(rows, cols), kernel_size).flatten() if kernel_size > 1 else m)
        prompts.append(torch.relu(a[P]))
    return _per_token(torch.stack(maps), torch.stack(prompts), 1.0 / len(Y))


# ----------------------------------------------------------------------------------------------- pixels

def blocks(model, pixel_values) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every image token of a single-image LLaVA input, row-major, from the patch size."""
    patch = model.config.vision_config.patch_size
    _, _, H, W = pixel_values.shape
    return [(r * patch, (r + 1) * patch, c * patch, (c + 1) * patch) for r in range(H // patch) for c in range(W // patch)]


def pool(attribution: torch.Tensor, model) -> torch.Tensor:
    """[1, C, H, W] pixel attributions summed over each token's block and the channels -> [V]."""
    return torch.stack([attribution[0, :, y0:y1, x0:x1].sum() for y0, y1, x0, x1 in blocks(model, attribution)])


def black(processor, like: torch.Tensor) -> torch.Tensor:
    ip = processor.image_processor
    mean = torch.tensor(ip.image_mean, dtype=like.dtype)
    std = torch.tensor(ip.image_std, dtype=like.dtype)
    return (-mean / std).view(1, -1, 1, 1).expand_as(like).clone()


def log_probs(m64, inputs64, Y, pixel_values=None, embeds=None) -> torch.Tensor:
    """log p(y_t) for every answer token ([T] float64); optional replacement pixels / input embeddings."""
    ids = inputs64["input_ids"]
    kwargs = dict(attention_mask=inputs64["attention_mask"],
                  pixel_values=inputs64["pixel_values"] if pixel_values is None else pixel_values)
    if embeds is None:
        out = m64(input_ids=ids, use_cache=False, **kwargs)
    else:
        out = m64(inputs_embeds=embeds, use_cache=False, **kwargs)
    logits = out.logits[0]
    return torch.stack([torch.log_softmax(logits[pos - 1], -1)[int(ids[0, pos])] for pos in Y])


def ref_path(model, processor, inputs, Y, V, P, nodes, weights, pixel_baseline="black"):
    """(x - x') sum_k w_k grad log p(y_t)(x' + a_k (x - x')) on the pixels (x' black or 0) and on the prompt
    embeddings (x' = 0, pixels at x), one point and one token at a time."""
    m64 = float64_copy(model)
    inputs64 = to_float64_inputs(inputs)
    x = inputs64["pixel_values"]
    base = black(processor, x) if pixel_baseline == "black" else torch.zeros_like(x)
    embed = m64.get_input_embeddings()(inputs64["input_ids"]).detach()
    T = len(Y)
    tv = torch.zeros(T, len(V), dtype=torch.float64)
    tp = torch.zeros(T, len(P), dtype=torch.float64)
    for a, w in zip(nodes, weights):
        point = (base + a * (x - base)).requires_grad_(True)
        lp = log_probs(m64, inputs64, Y, pixel_values=point)
        e = embed.clone()
        e[0, P] = a * embed[0, P]
        e.requires_grad_(True)
        lp_text = log_probs(m64, inputs64, Y, embeds=e)
        for t in range(T):
            (g,) = torch.autograd.grad(lp[t], point, retain_graph=True)
            tv[t] += w * pool((x - base) * g, model)
            (g,) = torch.autograd.grad(lp_text[t], e, retain_graph=True)
            tp[t] += w * (embed[0, P] * g[0, P]).sum(-1)
    return _per_token(tv, tp, 1.0)


def ref_input_gradient(model, processor, inputs, Y, V, P):
    return ref_path(model, processor, inputs, Y, V, P, [1.0], [1.0], pixel_baseline="zero")


def ref_integrated_gradients(model, processor, inputs, Y, V, P, steps):
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return ref_path(model, processor, inputs, Y, V, P, (nodes + 1) / 2, weights / 2)


def ref_occlusion(model, processor, inputs, Y, V, P, window=1, stride=1, baseline="mean", prompt_token="unk"):
    """Drop of log p(y_t) when windows of image-token blocks / single question tokens are replaced."""
    m64 = float64_copy(model)
    inputs64 = to_float64_inputs(inputs)
    x = inputs64["pixel_values"]
    base = black(processor, x) if baseline == "black" else torch.zeros_like(x)
    patch = model.config.vision_config.patch_size
    rows, cols = x.shape[2] // patch, x.shape[3] // patch

    def starts(n):
        s = list(range(0, n - window + 1, stride))
        return s if s[-1] == n - window else s + [n - window]

    with torch.no_grad():
        clean = log_probs(m64, inputs64, Y)
        total = torch.zeros(len(Y), rows, cols, dtype=torch.float64)
        count = torch.zeros(rows, cols, dtype=torch.float64)
        for r in starts(rows):
            for c in starts(cols):
                y0, y1, x0, x1 = r * patch, (r + window) * patch, c * patch, (c + window) * patch
                occluded = x.clone()
                occluded[:, :, y0:y1, x0:x1] = base[:, :, y0:y1, x0:x1]
                drop = clean - log_probs(m64, inputs64, Y, pixel_values=occluded)
                total[:, r:r + window, c:c + window] += drop[:, None, None]
                count[r:r + window, c:c + window] += 1
        tv = (total / count).reshape(len(Y), -1)
        replacement = getattr(processor.tokenizer, f"{prompt_token}_token_id")
        tp = torch.zeros(len(Y), len(P), dtype=torch.float64)
        for j, p in enumerate(P):
            changed = dict(inputs64, input_ids=inputs64["input_ids"].clone())
            changed["input_ids"][0, p] = replacement
            tp[:, j] = clean - log_probs(m64, changed, Y)
    return _per_token(tv, tp, 1.0)
