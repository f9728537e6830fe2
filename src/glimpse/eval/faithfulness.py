"""Faithfulness through the model: deletion and insertion curves of a map.

The image is cut into the image tokens' cells on the original image (`metrics.token_cells`). In
saliency order (highest first; ties in token order), a growing share of the cells is removed
(deletion: replaced by a baseline image) or revealed (insertion: the baseline image with those
cells put back), in steps of `step` of the tokens; each image is scored by the model's
teacher-forced log-likelihood of the explanation's answer (a token's map: of that token), all
steps of a curve batched. A pixel is removed as soon as any removed cell covers it (cells overlap
at their edges, and tiles of one image may see the same region). Beside each curve, the same curve for random orders of
the cells (their mean): a map is faithful when its deletion curve falls faster, and its insertion
curve rises faster, than random. The AUC is the trapezoid area over the fraction removed
(or revealed), 0 to 1.

Baselines: "blur", the image under a Gaussian blur of radius `blur` times its longer side; "mean",
its mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from ..errors import GlimpseError
from ..explanation import Explanation
from .metrics import token_cells

KINDS = ("deletion", "insertion")
BASELINES = ("blur", "mean")


@dataclass
class Curve:
    """One deletion or insertion curve: `scores` [steps + 1] at `fractions` of the tokens removed
    (or revealed), `random` the mean curve of random orders, and the areas under both."""

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    random: np.ndarray
    auc: float
    random_auc: float

    @property
    def gain(self) -> float:
        """How much faster than random the map's order moves the score: random AUC - AUC for
        deletion, AUC - random AUC for insertion (> 0: faithful)."""
        return self.random_auc - self.auc if self.kind == "deletion" else self.auc - self.random_auc


def faithfulness_curve(model: Any, processor: Any, explanation: Explanation, kind: str = "deletion", *,
                       token: int | None = None, image: int = 0, step: float = 0.1, baseline: str = "blur",
                       blur: float = 0.04, random_orders: int = 3, seed: int = 0, batch_size: int = 8,
                       system_prompt: str | None = None) -> Curve:
    """The `kind` curve of the explanation's map of image `image` (holistic, or answer token
    `token`'s), scored by the log-likelihood of the whole answer (or of that token). The prompt is
    rebuilt from the explanation's question (and `system_prompt`, if it was explained with one)."""
    if kind not in KINDS:
        raise GlimpseError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 0 < step <= 1:
        raise GlimpseError(f"step must be in (0, 1], got {step}")
    scores = explanation.image_scores(image, token)
    cells = token_cells(explanation.layouts[image])
    fractions = np.unique(np.append(np.arange(0.0, 1.0, step), 1.0))
    counts = np.round(fractions * len(cells)).astype(int)
    orders = [np.argsort(-scores, kind="stable")]
    rng = np.random.default_rng(seed)
    orders += [rng.permutation(len(cells)) for _ in range(random_orders)]
    original = explanation.images[image]
    background = baseline_image(original, baseline, blur)
    pictures = [_perturbed(original, background, [cells[i] for i in order[:k]], kind) for order in orders for k in counts]
    scored = _log_likelihoods(model, processor, explanation, image, pictures, token, batch_size, system_prompt)
    curves = scored.reshape(len(orders), len(counts))
    random = curves[1:].mean(0) if random_orders else np.full(len(counts), np.nan)
    return Curve(kind, fractions, curves[0], random, area(curves[0], fractions), area(random, fractions))


def area(values: np.ndarray, fractions: np.ndarray) -> float:
    """The trapezoid area under `values` over `fractions`."""
    return float(((values[1:] + values[:-1]) / 2 * np.diff(fractions)).sum())


def baseline_image(picture: Image.Image, kind: str, blur: float = 0.04) -> Image.Image:
    """What removed pixels become: the picture blurred (radius `blur` x its longer side) or its mean colour."""
    if kind == "blur":
        return picture.filter(ImageFilter.GaussianBlur(radius=blur * max(picture.size)))
    if kind == "mean":
        mean = np.asarray(picture, dtype=np.float64).reshape(-1, 3).mean(0)
        return Image.new("RGB", picture.size, tuple(int(round(c)) for c in mean))
    raise GlimpseError(f"baseline must be one of {', '.join(BASELINES)}, got {kind!r}")


def _perturbed(original: Image.Image, background: Image.Image, cells: list[tuple[int, int, int, int]],
               kind: str) -> Image.Image:
    removed = np.zeros((original.height, original.width), dtype=bool)
    for top, left, bottom, right in cells:
        removed[top:bottom, left:right] = True
    if kind == "insertion":
        removed = ~removed
    pixels = np.where(removed[..., None], np.asarray(background), np.asarray(original))
    return Image.fromarray(pixels.astype(np.uint8))


def _log_likelihoods(model: Any, processor: Any, explanation: Explanation, image: int, pictures: list[Image.Image],
                     token: int | None, batch_size: int, system_prompt: str | None) -> np.ndarray:
    """log p(answer) (or of answer token `token`) with image `image` replaced by each picture."""
    from ..methods.pixels import answer_log_probs
    from ..models import adapter_for
    from ..pipeline import model_inputs

    adapter = adapter_for(model, processor)
    text = adapter.render_prompt(explanation.question, len(explanation.images), system_prompt)
    ids = explanation.answer_token_ids

    def encoded(picture: Image.Image) -> dict[str, torch.Tensor]:
        images = [picture if i == image else x for i, x in enumerate(explanation.images)]
        return adapter.with_answer(adapter.encode(images, text), ids)
    layout, out = None, []
    with torch.no_grad():
        for start in range(0, len(pictures), batch_size):
            chunk = [encoded(p) for p in pictures[start: start + batch_size]]
            # Every picture has the original's size, so one layout serves all.
            layout = layout or adapter.layout(chunk[0], explanation.images, text, explanation.question, len(ids))
            # Per-position tensors gain one row per picture, per-image ones one entry (as `repeat_inputs`).
            batch = {k: torch.cat([c[k] for c in chunk]) for k in chunk[0]}
            log_probs = answer_log_probs(model, model_inputs(batch, model), layout)
            out.append((log_probs.sum(1) if token is None else log_probs[:, token]).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)
