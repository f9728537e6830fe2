"""What every explanation method is: a layer reducer for capture plus pure tensor maths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..capture import Capture, Trace, language_layer_count
from ..models.base import Adapter
from ..models.layout import SequenceLayout


@dataclass
class MethodResult:
    """A method's output, indexed like the layout: V positions in image order, P in prompt order.

    token_visual[t] and token_prompt[t] are answer token t's scores; visual and prompt are the
    holistic scores over the whole answer; beta_* weight tokens into the holistic maps.
    """

    token_visual: torch.Tensor
    token_prompt: torch.Tensor
    visual: torch.Tensor
    prompt: torch.Tensor
    beta_visual: torch.Tensor
    beta_prompt: torch.Tensor
    gamma: torch.Tensor
    layers: list[int]
    alpha: torch.Tensor | None = None
    probs: torch.Tensor | None = None  # p_t of each answer token; filled by `run`


class Method:
    """Base class of every explanation method.

    `run` gets the model, its adapter, the teacher-forced inputs and the layout, and returns a
    `MethodResult`. Attention-based methods subclass `AttentionMethod` and only write maths.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    approximate: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        raise NotImplementedError


class AttentionMethod(Method):
    """A method computed from the language model's attention (and its gradients) via `Capture`.

    A subclass overrides `reduce_layer` and `combine`. `reduce_layer(attn, grad, query)` receives
    one layer's attention probabilities and the gradient of the current answer token's logit with
    respect to them (both [heads, N, N], float32; grad is None when `gradients` is "none") and
    returns the small tensors `combine` needs; it runs inside the backward pass.
    `gradients`: "per_token" (exact), "sum" (one backward of the summed logits) or "none".
    """

    gradients: ClassVar[str] = "per_token"

    def layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers))

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor | None, query: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        raise NotImplementedError

    def run(self, model: Any, adapter: Adapter, inputs: dict[str, torch.Tensor],
            layout: SequenceLayout) -> MethodResult:
        layers = self.layers(language_layer_count(model))
        with Capture(model, adapter.text_config_key, self.reduce_layer, layers) as capture:
            trace = capture.run(inputs, layout, self.gradients)
        result = self.combine(trace, layout)
        result.probs = torch.tensor([t.prob for t in trace.tokens], dtype=torch.float32)
        return result
