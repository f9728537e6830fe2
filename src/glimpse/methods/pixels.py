"""Pixel-space attributions of the answer's log-likelihood: input x gradient, integrated gradients
and occlusion.

The explained quantity of answer token t is log p(y_t) (teacher forced, read at its query row);
the holistic maps explain the answer's log-likelihood sum_t log p(y_t), which is the sum of the
token maps (all three attributions are additive over the explained quantity), so beta = 1.

Image scores are computed on `pixel_values` (the processor's normalised pixels) and pooled to the
image-token grid through `adapter.token_patches`: a token's score is the sum of the attributions
over its pixel block and the channels (for occlusion, the drop when its block is occluded).

Prompt scores are NOT pixel attributions: they come from the question tokens' input embeddings at
the P positions. Input x gradient and integrated gradients use the embedding e_j times the
gradient (integrated along the straight path from the zero embedding, pixels fixed), summed over
the hidden dimension; occlusion replaces the question token by the tokenizer's unk (or pad)
token, i.e. its embedding by that token's embedding, and measures the drop.

Pixel blocks come from `adapter.token_patches` (a frame of 4-D or 5-D pixel_values and a
rectangle in it); processors that flatten pixel_values into patch rows (Qwen-VL) have no such
blocks, and these methods say so.

Baselines in pixel space: "mean" is the normalised 0 (the processor's mean colour); "black" is the
normalisation of intensity 0, (0 - mean) / std per channel, read from processor.image_processor.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from .. import progress
from ..capture import frozen
from ..errors import MethodError, OptionError
from ..layout import SequenceLayout
from ..models.base import Adapter
from .base import Method, MethodResult, answer_logits, result_from_tokens

BASELINES = ("mean", "black")
PROMPT_TOKENS = ("auto", "unk", "pad")


class PixelMethod(Method):
    """Runs a subclass's `attribute` on a frozen model and packs its token maps."""

    # Image tokens are reached through their pixel blocks (token_patches), never through sequence
    # rows, so images that enter by cross-attention (Mllama's vision keys) are explained the same way.
    cross_attention = True
    explains = "log_prob"

    def __init__(self, batch_size: int) -> None:
        self.batch_size = _positive_int("batch_size", batch_size)

    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        if inputs.get("pixel_values") is None:
            raise MethodError(f"method {self.name!r} needs pixel_values, which this model's processor does not give")
        if not adapter.pixel_blocks:
            raise MethodError(f"method {self.name!r} needs the {adapter.family or type(adapter).__name__} adapter to "
                              "map image tokens to pixel blocks, which it does not")
        patches = adapter.token_pixel_blocks(inputs, layout)
        with frozen(model):
            with torch.no_grad():
                clean = answer_log_probs(model, inputs, layout)[0]
            token_visual, token_prompt, details = self.attribute(model, adapter, inputs, layout, clean, patches)
        result = result_from_tokens(token_visual, token_prompt, [], torch.ones(len(layout.answer)))
        result.probs = clean.exp().cpu()
        result.details.update(details)
        return result

    @abstractmethod
    def attribute(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor], layout: SequenceLayout,
                  clean: torch.Tensor, patches: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(token_visual [T, V], token_prompt [T, P], the values of the method's `details`); `clean` holds
        log p(y_t) of the unperturbed input and `patches` every image token's block of pixel_values (an
        index, see `token_pixel_blocks`)."""


class InputGradient(PixelMethod):
    """Gradient x input: x * d log p(y_t) / dx on pixel_values, pooled per image token; prompt:
    e_j . d log p(y_t) / d e_j on the question tokens' embeddings."""

    name = "input_gradient"
    summary = "Gradient x input of each answer token's log-probability on the pixels, pooled per image token"
    paper = ("Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating "
             "Activation Differences (arXiv 1605.01713)")

    def __init__(self) -> None:
        super().__init__(1)

    def attribute(self, model, adapter, inputs, layout, clean, patches):
        # The straight-path formula with the zero (normalised) baseline and the single point x.
        one = torch.ones(1, dtype=torch.float64)
        zero = torch.zeros_like(inputs["pixel_values"])
        token_visual, token_prompt, _ = path_attributions(model, inputs, layout, patches, zero, one, one, 1)
        return token_visual, token_prompt, {}


class IntegratedGradients(PixelMethod):
    """Integrated gradients (x - x') * integral_0^1 d log p(y_t)/dx at x' + a (x - x') da on
    pixel_values from a black (or mean-colour) baseline, with `steps` Gauss-Legendre points on
    [0, 1] (the quadrature captum uses by default), `batch_size` points per forward pass. Prompt:
    the same integral on the question tokens' embeddings from the zero embedding, pixels fixed."""

    name = "integrated_gradients"
    summary = "Integrated gradients of each answer token's log-probability from a black image, pooled per image token"
    paper = "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks (ICML 2017, arXiv 1703.01365)"

    options = {"steps": "Gauss-Legendre points on the path", "baseline": f"the pixel baseline: {' | '.join(BASELINES)}",
               "batch_size": "path points per forward pass"}
    details = {"completeness_error": "[T] sum of the pixel attributions minus (log p(y_t | x) - log p(y_t | x')): "
                                     "zero for exact integration",
               "prompt_completeness_error": "[T] the same for the prompt embeddings' attributions (from the zero "
                                            "embedding, pixels fixed)"}

    def __init__(self, steps: int = 32, baseline: str = "black", batch_size: int = 8) -> None:
        super().__init__(batch_size)
        self.steps = _positive_int("steps", steps)
        self.baseline = _choice("baseline", baseline, BASELINES)

    def attribute(self, model, adapter, inputs, layout, clean, patches):
        nodes, weights = np.polynomial.legendre.leggauss(self.steps)
        alphas = torch.from_numpy((nodes + 1) / 2)
        baseline = pixel_baseline(adapter, inputs["pixel_values"], self.baseline)
        token_visual, token_prompt, totals = path_attributions(model, inputs, layout, patches, baseline, alphas,
                                                               torch.from_numpy(weights / 2), self.batch_size)
        with torch.no_grad():
            at_baseline = answer_log_probs(model, dict(inputs, pixel_values=baseline), layout)[0]
            with scaled_prompt_embeddings(model, layout.prompt, torch.zeros(1)):
                at_zero_prompt = answer_log_probs(model, inputs, layout)[0]
        return token_visual, token_prompt, {
            "completeness_error": totals[0] - (clean - at_baseline).float().cpu(),
            "prompt_completeness_error": totals[1] - (clean - at_zero_prompt).float().cpu()}


class Occlusion(PixelMethod):
    """Occlusion: windows of `window` x `window` image tokens, every `stride` tokens along each
    tile's grid (the last window is moved in to reach the edge), have their pixel blocks replaced
    by the baseline; a token's score is the mean, over the windows covering it, of the drop
    log p(y_t | x) - log p(y_t | occluded x). Prompt: each question token is replaced in turn by
    the tokenizer's `prompt_token` ("unk" or "pad"; "auto": unk where the tokenizer has one, else
    pad) and scored by the same drop."""

    name = "occlusion"
    summary = "Occlusion: drop of each answer token's log-probability when an image-token block is replaced by a baseline"
    paper = "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks (ECCV 2014, arXiv 1311.2901)"

    options = {"window": "side of the occluded square of image tokens", "stride": "tokens between windows",
               "baseline": f"what occluded pixels become: {' | '.join(BASELINES)}",
               "prompt_token": f"the token that replaces a question token: {' | '.join(PROMPT_TOKENS)}",
               "batch_size": "occluded inputs per forward pass"}

    def __init__(self, window: int = 1, stride: int = 1, baseline: str = "mean", prompt_token: str = "auto",
                 batch_size: int = 16) -> None:
        super().__init__(batch_size)
        self.window = _positive_int("window", window)
        self.stride = _positive_int("stride", stride)
        self.baseline = _choice("baseline", baseline, BASELINES)
        self.prompt_token = _choice("prompt_token", prompt_token, PROMPT_TOKENS)

    def attribute(self, model, adapter, inputs, layout, clean, patches):
        pixels = inputs["pixel_values"]
        baseline = pixel_baseline(adapter, pixels, self.baseline)
        regions = occlusion_regions(layout, self.window, self.stride)

        def occluded(region: list[int]) -> dict[str, torch.Tensor]:
            image = pixels.clone()
            for index in region:
                block = patches[index]
                image[block] = baseline[block]
            return {"pixel_values": image}

        drops = self._drops(model, inputs, layout, clean, [occluded(r) for r in regions])  # [regions, T]
        cover = torch.zeros(len(regions), len(patches))
        for r, region in enumerate(regions):
            cover[r, region] = 1.0
        token_visual = (drops.T @ cover) / cover.sum(0).clamp(min=1)

        replacement = self._replacement_id(adapter)
        ids = inputs["input_ids"]

        def masked(position: int) -> dict[str, torch.Tensor]:
            changed = ids.clone()
            changed[0, position] = replacement
            return {"input_ids": changed}

        token_prompt = self._drops(model, inputs, layout, clean, [masked(p) for p in layout.prompt]).T
        return token_visual, token_prompt, {}

    def _drops(self, model: Any, inputs: dict[str, torch.Tensor], layout: SequenceLayout, clean: torch.Tensor,
               changes: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """clean - log p(y_t) for every changed input ([len(changes), T]), `batch_size` per forward."""
        out = []
        with torch.no_grad(), progress.steps(-(-len(changes) // self.batch_size), "occlusion") as bar:
            for start in range(0, len(changes), self.batch_size):
                chunk = changes[start:start + self.batch_size]
                stacked = {k: torch.cat([c[k] for c in chunk]) for k in chunk[0]}
                out.append(clean - answer_log_probs(model, repeat_inputs(inputs, len(chunk), **stacked), layout))
                bar.update(1)
        return torch.cat(out).float().cpu()

    def _replacement_id(self, adapter: Adapter) -> int:
        wanted = ("unk", "pad") if self.prompt_token == "auto" else (self.prompt_token,)
        for kind in wanted:
            token_id = getattr(adapter.tokenizer, f"{kind}_token_id", None)
            if token_id is not None:
                return int(token_id)
        raise MethodError(f"the tokenizer has no {' or '.join(wanted)} token to occlude prompt tokens with"
                          + ("" if self.prompt_token == "auto" else "; pass prompt_token='auto'"))


# --- shared machinery ---------------------------------------------------------------------------

def answer_log_probs(model: Any, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
    """log p(y_t) of every answer token for every sequence of the batch ([batch, T], float32)."""
    _, logits = answer_logits(model, inputs, len(layout.answer))
    ids = inputs["input_ids"][:, list(layout.answer)].to(logits.device)
    return logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]


def repeat_inputs(inputs: dict[str, torch.Tensor], n: int, **replaced: torch.Tensor) -> dict[str, Any]:
    """A batch of n copies of a one-sequence input; `replaced` inputs are given for the whole batch.

    Every tensor is stacked n times along its first axis: per-position inputs (ids, masks) have one
    row per sequence, and pixel_values and per-image metadata one entry per image, which the model
    assigns to the sequences in order.
    """
    return {key: replaced[key] if key in replaced
            else value.repeat(n, *([1] * (value.dim() - 1))) if torch.is_tensor(value) else value
            for key, value in inputs.items()}


def pixel_baseline(adapter: Adapter, pixels: torch.Tensor, kind: str) -> torch.Tensor:
    """The baseline image in normalised pixel space: "mean" is 0; "black" is (0 - mean) / std."""
    return torch.zeros_like(pixels) if kind == "mean" else adapter.black_pixels(pixels)


def pool_to_tokens(attribution: torch.Tensor, blocks: list[tuple]) -> torch.Tensor:
    """[T, *pixel_values shape] attributions summed over each image token's block -> [T, V]."""
    return torch.stack([attribution[(slice(None), *block)].flatten(1).sum(1) for block in blocks], 1)


def integrate(forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], alphas: torch.Tensor,
              weights: torch.Tensor, batch_size: int, n_answer: int) -> torch.Tensor:
    """sum_k weights_k * d log p(y_t) / d point_k for every answer token t ([T, *point shape]).

    `forward(alpha_chunk)` evaluates a batch of path points and returns (log-probabilities
    [batch, T], the points [batch, ...] as the tensor to differentiate with respect to).
    """
    total = None
    chunks = -(-len(alphas) // batch_size)
    with torch.enable_grad(), progress.steps(chunks * n_answer, "integrated gradients") as bar:
        for start in range(0, len(alphas), batch_size):
            log_probs, points = forward(alphas[start:start + batch_size])
            w = weights[start:start + batch_size].to(log_probs)
            grads = []
            for t in range(n_answer):
                grads.append(torch.autograd.grad(log_probs[:, t] @ w, points, retain_graph=t < n_answer - 1)[0].float().sum(0))
                bar.update(1)
            part = torch.stack(grads)
            total = part if total is None else total + part
    return total


def path_attributions(model: Any, inputs: dict[str, torch.Tensor], layout: SequenceLayout, patches: list[tuple],
                      baseline: torch.Tensor, alphas: torch.Tensor, weights: torch.Tensor,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(x - x') * sum_k w_k grad f(x' + a_k (x - x')) on the pixels (pooled per image token) and the
    same from the zero embedding on the question tokens' embeddings (summed over the hidden size),
    with each one's total per answer token over every pixel and every question token."""
    pixels = inputs["pixel_values"]
    n_answer = len(layout.answer)

    def pixel_forward(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = chunk.to(pixels).view(-1, *([1] * pixels.dim()))
        points = (baseline + scale * (pixels - baseline)).requires_grad_(True)
        batch = repeat_inputs(inputs, len(chunk), pixel_values=points.flatten(0, 1))
        return answer_log_probs(model, batch, layout), points

    pixel_grads = integrate(pixel_forward, alphas, weights, batch_size, n_answer)
    pixel_attribution = (pixels - baseline).float().cpu() * pixel_grads.cpu()
    token_visual = pool_to_tokens(pixel_attribution, patches)

    embeddings: dict[str, torch.Tensor] = {}

    def prompt_forward(chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with scaled_prompt_embeddings(model, layout.prompt, chunk) as found:
            log_probs = answer_log_probs(model, repeat_inputs(inputs, len(chunk)), layout)
        embeddings.update(found)
        return log_probs, found["points"]

    prompt_grads = integrate(prompt_forward, alphas, weights, batch_size, n_answer)
    token_prompt = (embeddings["value"].float().cpu() * prompt_grads.cpu()).sum(-1)
    return token_visual, token_prompt, (pixel_attribution.flatten(1).sum(1), token_prompt.sum(1))


@contextmanager
def scaled_prompt_embeddings(model: Any, positions: tuple[int, ...], alphas: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
    """Inside, the input embeddings at `positions` of batch row b are scaled by alphas[b] (the straight
    path from the zero embedding). Yields a dict that the forward pass fills with "points" (the
    scaled embeddings [batch, len(positions), hidden], requiring grad) and "value" (the embeddings)."""
    index = torch.tensor(positions, dtype=torch.long)
    found: dict[str, torch.Tensor] = {}

    def hook(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if output.dim() != 3 or output.shape[0] != len(alphas) or output.shape[1] <= int(index.max()):
            return None
        value = output[:, index.to(output.device)].detach()
        points = (alphas.to(value).view(-1, 1, 1) * value).requires_grad_(True)
        scaled = output.detach().clone()
        scaled[:, index.to(output.device)] = points
        found.update(points=points, value=value[0])
        return scaled

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def occlusion_regions(layout: SequenceLayout, window: int, stride: int) -> list[list[int]]:
    """Indices into V of every occlusion window, tile by tile."""
    regions, offset = [], 0
    for image in layout.images:
        for tile in image.tiles:
            for r in _starts(tile.rows, window, stride):
                for c in _starts(tile.cols, window, stride):
                    regions.append([offset + y * tile.cols + x for y in range(r, min(r + window, tile.rows))
                                    for x in range(c, min(c + window, tile.cols))])
            offset += tile.rows * tile.cols
    return regions


def _starts(size: int, window: int, stride: int) -> list[int]:
    last = max(size - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else starts + [last]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive integer, got {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value
