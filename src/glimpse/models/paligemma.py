"""PaliGemma and PaliGemma 2 (`PaliGemmaForConditionalGeneration`): a prefix-LM with the images first.

There is no chat template. The processor turns "<image>" * n + prompt into n runs of
image_seq_length image tokens, then `<bos>`, the prompt and a closing "\\n"; the prompt is the
question itself (or a task prefix such as "caption en"). That prefix (token_type_ids 0) attends
BIDIRECTIONALLY to itself; the answer is the causal suffix (token_type_ids 1, as PaliGemma's own
`generate` marks new tokens). Each image becomes a row-major grid of (size / patch)^2 SigLIP tokens
over the whole image stretched to the processor's square, which is LLaVA-1.5's layout without crop
or pad, so the layout code is that adapter's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..layout import SequenceLayout
from .grids import block_pairs
from .llava import LlavaAdapter


class PaliGemmaAdapter(LlavaAdapter):
    family = "paligemma"
    architectures = ("PaliGemmaForConditionalGeneration",)
    prefix_lm = True  # the whole prompt is one bidirectional prefix

    def render_prompt(self, question: str, n_images: int, system_prompt: str | None = None) -> str:
        # No template and no system slot: a system prompt can only be text before the question.
        text = f"{system_prompt}\n{question}" if system_prompt else question
        return self.processor.image_token * n_images + text

    def answer_ids(self, prompt_text: str, answer: str) -> list[int]:
        # The answer follows the "\n" the processor closes the prefix with, not the question itself.
        return super().answer_ids(prompt_text + "\n", answer)

    def question_span(self, input_ids: Sequence[int], prompt_text: str,
                      question: str) -> tuple[list[int], list[tuple[int, int]]]:
        # Tokenise the question with the "\n" that follows it in the processor's text, so a
        # tokenizer that merges across that boundary finds the same ids.
        return super().question_span(input_ids, prompt_text + "\n", question)

    def with_answer(self, inputs: dict[str, torch.Tensor], answer_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        out = super().with_answer(inputs, answer_ids)
        if "token_type_ids" in inputs:
            # 1 = causal suffix. The base class's 0 would put the answer into the bidirectional prefix:
            # every answer token would see the later ones.
            types = inputs["token_type_ids"]
            out["token_type_ids"] = torch.cat([types, types.new_ones(types.shape[0], len(answer_ids))], dim=1)
        return out

    def bidirectional_pairs(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> torch.Tensor:
        # The prefix is the whole prompt: images, <bos>, the prompt text and its "\n".
        return block_pairs(layout.length, [range(layout.answer[0])])
