"""What every explanation method is: a layer reducer for capture plus pure tensor maths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..capture import Trace
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


class Method:
    """Base class: a method overrides `reduce_layer` and `combine`.

    `reduce_layer(attn, grad, query)` receives one layer's attention probabilities and the
    gradient of the current answer token's logit with respect to them (both [heads, N, N],
    float32), and returns the small tensors `combine` needs. It runs inside the backward pass.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True

    def params(self) -> dict[str, Any]:
        raise NotImplementedError

    def layers(self, n_layers: int) -> list[int]:
        return list(range(n_layers))

    def reduce_layer(self, attn: torch.Tensor, grad: torch.Tensor, query: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine(self, trace: Trace, layout: SequenceLayout) -> MethodResult:
        raise NotImplementedError
