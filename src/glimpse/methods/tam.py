"""Token Activation Map (TAM; Li, Wang, Ding, Wang & Li, ICCV 2025, arXiv 2506.23270).

For answer token t with class c = y_t, the class activation of every sequence position i is the
logit of c computed from that position's last hidden state, a_c[i] = W_c . h_L[i] (+ b_c), i.e.
the language-model head applied to the final (normed) hidden state. TAM then:

1. Raw map: m_t = ReLU(a_c[V]) over the image tokens.
2. Estimated causal inference (ECI): the context tokens that precede y_t (the question tokens P
   and the earlier answer tokens y_k, k < t) leave activations that interfere with y_t's map. Each
   context token j has its own raw map m_j = ReLU(a_{x_j}[V]) (its own class x_j) and a weight
   w_j = ReLU(a_c[row_j]), the current class's activation at the context token's feature: a
   question token's own position, an answer token's query row (the feature that produced it).
   This is the paper's F_p / F_a split and the authors' released code. Context tokens equal to
   y_t (same id) are left out. The interference map is I_t = sum_j w_j m_j / sum_j w_j, scaled by
   the least-squares factor s = argmin_s ||m_t - s I_t||^2 = <m_t, I_t> / <I_t, I_t>, and removed:
   m_t <- ReLU(m_t - s I_t). (The normalisation of w cancels in s I_t; with no context, no positive
   weight, or I_t = 0 the map is left unchanged.) Option `causal_inference` (default True).
3. Rank Gaussian filter (RGF) on every tile's token grid: each k x k window (reflect padding,
   replicate where a grid side is too short to reflect) is sorted, and the output is the mean of
   the sorted values weighted by a Gaussian over their centred rank r - (k^2 // 2), whose width is
   the window's coefficient of variation std / mean (population std); a window with mean <= 0 gives 0,
   a constant window gives its value (the limit of a vanishing width). Option `kernel_size`
   (odd, default 3 as in the paper; 1 switches the filter off).

Choices where the paper leaves room, documented here:
- Scores keep logit units: the authors' code min-max normalises image and text scores together
  before the filter; the scores are ReLU'd (minimum usually 0), so that is a positive rescale,
  to which the filter is equivariant; glimpse normalises for display itself.
- The authors' code reaches the first answer token through a pass over the prompt tokens (where
  the first prompt token's map uses the model's greedy prediction); here every answer token,
  the first included, follows the same rule, and every question token's map uses its own id
  x_j, the token that is actually there.
- a_c is the LM head applied to the last hidden state, as the authors compute it; where that does
  not reproduce the model's own logits (final-logit soft-capping, a last hidden state taken
  before the final norm), the model's logits for the needed classes are used instead.
- Prompt scores: token_prompt[t] = ReLU(a_c[P]), the current class's activation at the question
  tokens (the text part of the map, as the authors display it). Holistic maps: mean over tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..capture import frozen, language_layer_count
from ..errors import CostWarning, OptionError, note
from ..layout import SequenceLayout
from ..models.base import Adapter
from .base import Method, MethodResult, answer_logits, result_from_tokens


class TokenActivationMap(Method):
    name = "tam"
    summary = "Token Activation Map: LM-head logit at each image token, context interference removed, rank-Gaussian filtered"
    paper = ("Li, Wang, Ding, Wang & Li 2025, Token Activation Map to Visually Explain Multimodal LLMs "
             "(ICCV 2025, arXiv 2506.23270)")
    options = {"causal_inference": "remove the context tokens' interference (estimated causal inference)",
               "kernel_size": "side of the rank Gaussian filter's window (odd; 1 switches the filter off)"}
    details = {"interference_scale": "[T] least-squares scale s of the context interference removed from each "
                                     "token's map (0 where nothing was removed)"}

    def __init__(self, causal_inference: bool = True, kernel_size: int = 3) -> None:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise OptionError(f"kernel_size must be an odd integer >= 1, got {kernel_size!r}")
        self.causal_inference = bool(causal_inference)
        self.kernel_size = kernel_size

    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        ids = inputs["input_ids"][0]
        answer_ids = ids[list(layout.answer)]
        prompt_ids = ids[list(layout.prompt)]
        classes = torch.cat([answer_ids, prompt_ids])
        activation, probs, refit = class_activations(model, inputs, layout, classes)
        result = token_activation_maps(activation, layout, answer_ids.cpu(), prompt_ids.cpu(),
                                       self.causal_inference, self.kernel_size)
        if refit:
            note(result.notes, "the LM head on the last hidden states does not reproduce this model's logits "
                               "(soft-capping or an un-normed last hidden state): TAM ran a second forward pass "
                               "for the model's own logits", CostWarning)
        result.layers = [language_layer_count(model) - 1]
        result.probs = probs
        return result


def class_activations(model: Any, inputs: dict[str, torch.Tensor], layout: SequenceLayout,
                      classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """a[i, k] = logit of class `classes[k]` at every position i ([N, K], float32, CPU), the
    probabilities p_t of the answer tokens, and whether a second forward pass was needed for the
    model's own logits (one forward pass with the last hidden states usually gives both)."""
    n_answer = len(layout.answer)
    classes = classes.cpu()
    answer = torch.arange(n_answer)
    with frozen(model), torch.no_grad():
        out, logits = answer_logits(model, inputs, n_answer, output_hidden_states=True)
        head = model.get_output_embeddings()
        picked = classes.to(head.weight.device)
        activation = out.hidden_states[-1][0].to(head.weight.device) @ head.weight[picked].T
        if getattr(head, "bias", None) is not None:
            activation = activation + head.bias[picked]
        activation, logits = activation.float().cpu(), logits[0].cpu()
        expected = logits[answer, classes[:n_answer]]
        own = activation[torch.tensor(layout.queries), answer]
        refit = not torch.allclose(own, expected, rtol=1e-3, atol=1e-3 * max(1.0, float(expected.abs().max())))
        if refit:
            # The head on the hidden states is not the model's logits (soft-capping, an un-normed
            # last hidden state, ...): take the model's own logits for the classes instead.
            full = model(**inputs, use_cache=False).logits[0]
            activation = full[:, classes.to(full.device)].float().cpu()
    probs = torch.softmax(logits, -1)[answer, classes[:n_answer]]
    return activation, probs, refit


def token_activation_maps(activation: torch.Tensor, layout: SequenceLayout, answer_ids: torch.Tensor,
                          prompt_ids: torch.Tensor, causal_inference: bool = True,
                          kernel_size: int = 3) -> MethodResult:
    """TAM's maths from the class activations `activation` [N, T + |P|] (answer classes first,
    then the question tokens' classes, in layout order)."""
    n_answer = len(layout.answer)
    visual = torch.tensor(layout.image_positions, dtype=torch.long)
    prompt = torch.tensor(layout.prompt, dtype=torch.long)
    raw = activation[visual].T.clamp(min=0)  # [K, V]: every class's raw image map
    context_ids = torch.cat([prompt_ids, answer_ids])
    context_maps = torch.cat([raw[n_answer:], raw[:n_answer]])
    context_rows = torch.cat([prompt, torch.tensor(layout.queries, dtype=torch.long)])
    maps, scales = [], torch.zeros(n_answer)
    for t in range(n_answer):
        own = raw[t]
        if causal_inference:
            # Context of y_t: the question tokens and the answer tokens before it, not equal to y_t.
            usable = torch.arange(len(context_ids)) < len(prompt_ids) + t
            usable &= context_ids != answer_ids[t]
            weights = activation[context_rows[usable], t].clamp(min=0)
            own, scales[t] = remove_interference(own, weights @ context_maps[usable])
        maps.append(rank_gaussian_filter_tiles(own, layout, kernel_size))
    token_visual = torch.stack(maps)
    token_prompt = activation[prompt, :n_answer].T.clamp(min=0)
    uniform = torch.full((n_answer,), 1.0 / n_answer)
    result = result_from_tokens(token_visual, token_prompt, [], uniform)
    result.details["interference_scale"] = scales
    return result


def remove_interference(own: torch.Tensor, interference: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(ReLU(m - s I), s) with s the least-squares scale of I onto m (m unchanged, s = 0, when I = 0)."""
    energy = interference @ interference
    if energy <= 0:
        return own, 0.0
    scale = float((own @ interference) / energy)
    return (own - scale * interference).clamp(min=0), scale


def rank_gaussian_filter_tiles(scores: torch.Tensor, layout: SequenceLayout, kernel_size: int) -> torch.Tensor:
    """The rank Gaussian filter applied to every tile's grid of a [V] score vector."""
    out, start = [], 0
    for image in layout.images:
        for tile in image.tiles:
            n = tile.rows * tile.cols
            grid = scores[start:start + n].reshape(tile.rows, tile.cols)
            out.append(rank_gaussian_filter(grid, kernel_size).flatten())
            start += n
    return torch.cat(out)


def rank_gaussian_filter(grid: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """TAM's rank Gaussian filter on a 2-D grid (see the module docstring)."""
    if kernel_size == 1:
        return grid.clone()
    pad = kernel_size // 2
    mode = "reflect" if min(grid.shape) > pad else "replicate"
    padded = F.pad(grid[None, None].float(), (pad, pad, pad, pad), mode=mode)
    windows = F.unfold(padded, kernel_size)[0].T  # [rows * cols, k * k]
    ordered = windows.sort(dim=1).values
    mean = ordered.mean(1, keepdim=True)
    spread = ordered.std(1, correction=0, keepdim=True) / mean.clamp(min=1e-30)
    rank = torch.arange(kernel_size ** 2, dtype=ordered.dtype) - kernel_size ** 2 // 2
    kernel = torch.exp(-rank ** 2 / (2 * spread.clamp(min=1e-12) ** 2))
    value = (ordered * kernel).sum(1) / kernel.sum(1)
    return torch.where(mean[:, 0] > 0, value, torch.zeros_like(value)).reshape(grid.shape)
