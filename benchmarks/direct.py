"""GLIMPSE implemented directly, as public re-implementations do: eager attention with
`output_attentions=True`, every layer's attention probabilities kept with `retain_grad`, one
backward pass per answer token, full N x N matrices for Steps 1-3. Written from docs/method.md
without glimpse's method code (only the adapter's positions are borrowed); it is the comparison
point of `benchmarks/exact.py`, not part of the package.
"""

from __future__ import annotations

import torch


def direct_glimpse(model, inputs: dict, answer_positions: list[int], image_positions: list[int],
                   prompt_positions: list[int], head_lambda: float = 0.5, depth_lambda: float = 0.2) -> dict:
    """Per-token visual rows [T, V], per-token prompt rows [T, P] and the holistic visual map [V]."""
    model.set_attn_implementation("eager")
    # The weights are frozen: gradients must start at the language model's input embeddings.
    hook = model.get_input_embeddings().register_forward_hook(lambda m, a, out: out.requires_grad_(True))
    with torch.enable_grad():
        out = model(**inputs, use_cache=False, output_attentions=True)
    hook.remove()
    attentions = out.attentions
    for a in attentions:
        a.retain_grad()
    logits = out.logits[0]
    ids = inputs["input_ids"][0]
    n_layers = len(attentions)
    prior = torch.softmax(depth_lambda * torch.arange(1, n_layers + 1, dtype=torch.float32), 0)
    rows_v, rows_p, probs = [], [], []
    for t, pos in enumerate(answer_positions):
        for a in attentions:
            a.grad = None
        logit = logits[pos - 1, ids[pos]]
        logit.backward(retain_graph=t < len(answer_positions) - 1)
        probs.append(float(torch.softmax(logits[pos - 1].detach().float(), -1)[ids[pos]]))
        fused, evidence = [], []
        for a in attentions:
            attn, grad = a.detach()[0].float(), a.grad[0].float()
            relu = grad.clamp(min=0)
            weights = torch.softmax((relu * attn).sum((1, 2)) / relu.sum((1, 2)).clamp(min=1e-12) / head_lambda, 0)
            e = torch.einsum("h,hqk->qk", weights, relu * attn)
            sums = e.sum(1, keepdim=True)
            fused.append(torch.where(sums > 0, e / sums.clamp(min=1e-12), torch.zeros_like(e)))
            # Rows after the token's query row have no gradient; the norm is over the whole matrix.
            evidence.append(grad.sum(0).abs().sum())
        weighted = torch.stack(evidence) * prior
        alpha = weighted / weighted.sum() if weighted.sum() > 0 else prior
        row = torch.zeros(len(ids))
        row[pos - 1] = 1.0
        for layer in reversed(range(n_layers)):
            row = row + 0.5 * alpha[layer] * (row @ fused[layer])
        rows_v.append(row[image_positions])
        rows_p.append(row[prompt_positions])
    model.set_attn_implementation("sdpa")
    token_visual, token_prompt = torch.stack(rows_v), torch.stack(rows_p)
    p = torch.tensor(probs)
    beta = p * token_prompt.mean(1)
    beta = beta / beta.sum() if beta.sum() > 0 else torch.full_like(beta, 1 / len(beta))
    return {"token_visual": token_visual, "token_prompt": token_prompt, "visual": beta @ token_visual}
