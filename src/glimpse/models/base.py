"""The adapter contract: everything family-specific about a vision-language model.

An adapter knows how a family builds its prompt, where its image tokens sit, how each image's
token grid maps back to the original pixels, and how to extend its inputs with answer tokens.
The rest of glimpse (capture, methods, the result object) never looks at the model family; it
reads the capabilities an adapter declares (`pixel_blocks`, `cross_attention_images`,
`prefix_lm`) instead of probing for them. docs/adding-a-family.md walks through a new family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from PIL import Image

from ..errors import ImageError, MethodError, PromptError
from ..layout import SEQUENCE, ImageLayout, SequenceLayout
from . import text
from .grids import PixelPatch, block_index

# Inputs that hold one value per sequence position and must grow with the answer.
PER_TOKEN_INPUTS = ("token_type_ids", "mm_token_type_ids")
# Processor attributes that hold a text marking an image or its parts in the prompt (the families'
# processors name them differently; `Adapter.image_placeholders` keeps those the tokenizer has as tokens).
PLACEHOLDER_ATTRIBUTES = ("image_token", "video_token", "boi_token", "eoi_token", "fake_image_token",
                          "global_image_tag", "global_image_token", "start_image_token", "end_image_token",
                          "vision_start_token", "vision_end_token", "start_of_img_token", "end_of_img_token",
                          "img_patch_token", "img_line_break_token", "tile_global_token")


class Adapter(ABC):
    """One model family. Subclass it, then `glimpse.register_adapter(YourAdapter)`.

    MUST provide
        `family` (a short name), `architectures` (the model class names it handles: `matches`
        compares `type(model).__name__`) and `image_layouts` (abstract: per image, its token grids
        and the box each covers in original pixels).

    MAY override (the defaults suit a decoder-only chat model whose processor expands one image
    token id, `config.image_token_id`, into each image's run of tokens)
        `apply_chat_template` (the prompt text of a list of chat messages), `render_prompt` (a
        family without a chat template), `encode`, `answer_ids`, `with_answer` (extra per-token
        inputs), `question_span`, `layout`, `image_token_positions`, `token_patches` or
        `token_pixel_blocks`, `black_pixels`, `bidirectional_pairs`, `cross_attention_layers`,
        `context_length` (the longest input the model takes), `image_placeholders` (image marker texts).

    DECLARES (class attributes, False unless set; checked when the class is defined)
        `pixel_blocks`: image tokens map to blocks of pixel_values, so pixel-space methods
        (input gradient, integrated gradients, occlusion) run. Needs `token_patches` (image-shaped
        pixel_values) or `token_pixel_blocks` (any other layout) overridden.
        `cross_attention_images`: images enter only through cross-attention layers (Mllama); the
        layout's images index those layers' keys. Needs `cross_attention_layers` overridden.
        `prefix_lm`: some later keys are legitimately visible (a bidirectional prefix or image
        block: PaliGemma, Gemma 3). Needs `bidirectional_pairs` overridden.
    """

    family: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    # Sub-config of the language model, whose attention glimpse captures.
    text_config_key: ClassVar[str] = "text_config"
    pixel_blocks: ClassVar[bool] = False
    cross_attention_images: ClassVar[bool] = False
    prefix_lm: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for capability in CAPABILITIES:
            capability.check(cls)

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)

    @classmethod
    def matches(cls, model: Any) -> bool:
        return type(model).__name__ in cls.architectures

    # --- MUST ---------------------------------------------------------------------------------
    @abstractmethod
    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        """One ImageLayout per image, in order: its tiles (row-major token grids), each with the box it
        covers in ORIGINAL image pixels and its tokens' positions (sequence positions, or vision-key
        indices when `cross_attention_images`)."""

    # --- prompt -------------------------------------------------------------------------------
    def render_prompt(self, question: str, n_images: int, system_prompt: str | None = None) -> str:
        """The prompt text for one user turn with `n_images` images and the question."""
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        return self.apply_chat_template(messages)

    def apply_chat_template(self, messages: list[dict]) -> str:
        """The text of `messages` (chat format, images as {"type": "image"}) with the generation prompt."""
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, images: Sequence[Image.Image], prompt_text: str) -> dict[str, torch.Tensor]:
        try:
            batch = self.processor(images=list(images), text=prompt_text, return_tensors="pt")
        except ValueError as exc:
            # e.g. an image smaller than the processor's minimum size: the user's input, not a bug
            sizes = ", ".join(f"{im.width}x{im.height}" for im in images)
            raise ImageError(f"the model's processor cannot prepare the image(s) ({sizes}): {exc}") from None
        return {k: v for k, v in batch.items() if k != "labels"}

    def answer_ids(self, prompt_text: str, answer: str) -> list[int]:
        """Token ids of `answer` as they follow the prompt (see `text.answer_ids`)."""
        return text.answer_ids(self.tokenizer, prompt_text, answer)

    def with_answer(self, inputs: dict[str, torch.Tensor], answer_ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """Teacher-forced inputs: the prompt inputs with the answer tokens appended."""
        ids = inputs["input_ids"]
        extra = torch.tensor([list(answer_ids)], dtype=ids.dtype, device=ids.device)
        out = dict(inputs, input_ids=torch.cat([ids, extra], dim=1))
        if "attention_mask" in inputs:
            mask = inputs["attention_mask"]
            out["attention_mask"] = torch.cat([mask, torch.ones_like(extra, dtype=mask.dtype)], dim=1)
        for key in PER_TOKEN_INPUTS:
            if key in inputs:
                out[key] = torch.cat([inputs[key], torch.zeros_like(extra, dtype=inputs[key].dtype)], dim=1)
        return out

    def context_length(self) -> int | None:
        """The most positions the language model takes: `max_position_embeddings` of its text config
        (`text_config_key`), else of the model's config; None when neither says (no check is made)."""
        config = self.model.config
        for source in (getattr(config, self.text_config_key, None), config):
            value = getattr(source, "max_position_embeddings", None) if source is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    def image_placeholders(self) -> tuple[str, ...]:
        """The texts that stand for an image (or its tiles) in this model's prompt, such as "<image>":
        glimpse inserts them itself, so typed into a prompt or an answer they are a mistake. The
        processor's image-marker attributes that are tokens of the tokenizer, and the image token."""
        found = [getattr(self.processor, name, None) for name in PLACEHOLDER_ATTRIBUTES]
        image_id = getattr(self.model.config, "image_token_id", None)
        if isinstance(image_id, int) and not isinstance(image_id, bool):
            try:
                found.append(self.tokenizer.convert_ids_to_tokens(image_id))
            except (IndexError, OverflowError, TypeError, ValueError):  # an id outside the vocabulary
                pass
        try:
            vocabulary = set(self.tokenizer.get_added_vocab())
        except (AttributeError, NotImplementedError):
            vocabulary = None
        texts = [str(text) for text in found if text is not None and str(text).strip()]
        return tuple(dict.fromkeys(text for text in texts
                                   if (text in vocabulary if vocabulary is not None else text.startswith("<"))))

    # --- layout -------------------------------------------------------------------------------
    def question_span(self, input_ids: Sequence[int], prompt_text: str,
                      question: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Positions of the question's own tokens (not system prompt or template), with each token's
        character span inside `question`; ([], []) when it cannot be located (see `text.question_span`)."""
        return text.question_span(self.tokenizer, input_ids, prompt_text, question)

    def layout(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image], prompt_text: str,
               question: str, n_answer: int) -> SequenceLayout:
        """Where the images (V), the question (P) and the answer (Y, the last `n_answer` tokens) sit."""
        ids = inputs["input_ids"][0].tolist()
        images_layout = tuple(self.image_layouts(inputs, images))
        length = len(ids)
        answer = tuple(range(length - n_answer, length))
        prompt, spans = self.question_span(ids[: length - n_answer], prompt_text, question)
        if prompt:
            words, word_of = text.words_of_spans(question, spans)
        else:
            # Vision-key indices (cross-attention families) are not sequence positions: nothing to exclude.
            excluded = {p for image in images_layout if image.positions_axis == SEQUENCE for p in image.positions}
            prompt = text.fallback_prompt(self.tokenizer, ids[: length - n_answer], excluded)
            words, word_of = text.token_words(self.tokenizer, ids, prompt), tuple(range(len(prompt)))
        if not prompt:
            raise PromptError("the prompt has no text tokens to explain")
        return SequenceLayout(images_layout, tuple(prompt), answer, length, words, word_of, bool(spans))

    def image_token_positions(self, inputs: dict[str, torch.Tensor]) -> list[int]:
        """Sequence positions holding the model's image token id."""
        return torch.nonzero(inputs["input_ids"][0] == self.model.config.image_token_id).flatten().tolist()

    # --- pixels (with `pixel_blocks`) -----------------------------------------------------------
    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        """For every image token (in `layout.image_positions` order), the block of `pixel_values`
        it sees: (frame index along pixel_values' leading axes, y0, y1, x0, x1); see `PixelPatch`.
        A token that mixes several frames (LLaVA-OneVision's downsampling across a tile seam) gets
        its block in the frame it draws on most. Pixel-space methods pool and occlude through this."""
        self._require_pixel_blocks()
        raise MethodError(f"the {self._name()} adapter gives its pixel blocks as token_pixel_blocks: its "
                          "pixel_values are not image-shaped")

    def token_pixel_blocks(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[tuple]:
        """For every image token, the index into `pixel_values` of the elements it sees (pooling and
        occlusion use it). Image-shaped pixel_values derive it from `token_patches`; adapters whose
        processor flattens patches (Qwen-VL) override it."""
        self._require_pixel_blocks()
        return [block_index(patch) for patch in self.token_patches(inputs, layout)]

    def black_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """A black image in the processor's normalised pixel space, shaped like `pixels`:
        (0 - mean) / std per channel, channels on the third axis from the end."""
        shape = [1] * pixels.dim()
        shape[-3] = -1
        return self.black_per_channel().to(pixels).view(shape).expand_as(pixels).clone()

    def black_per_channel(self) -> torch.Tensor:
        """(0 - mean) / std per channel of the processor's normalisation; one 0 for every channel
        when it does not normalise."""
        processor = getattr(self.processor, "image_processor", None)
        if processor is None or not getattr(processor, "do_normalize", True):
            return torch.zeros(1)
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32)
        return -mean / torch.as_tensor(processor.image_std, dtype=torch.float32)

    # --- attention structure (with `prefix_lm` / `cross_attention_images`) ------------------------
    def bidirectional_pairs(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> torch.Tensor | None:
        """Boolean [N, N]: the (query, key) pairs where attending to a LATER key is legitimate in
        this family (a bidirectional prefix or image block), or None for a strictly causal model.

        Capture accepts future attention at exactly these pairs and rejects any other. Derive them
        from the layout, never from the per-token inputs the model builds its mask from, or a wrong
        input would pass as its own allowance."""
        return None

    def cross_attention_layers(self) -> tuple[int, ...]:
        """Language-model layers whose attention is cross-attention (text queries, vision keys).

        Empty in a decoder-only family; capture records these separately (no causal structure: their
        keys are not sequence positions) and methods map images through them (see Mllama)."""
        return ()

    def _require_pixel_blocks(self) -> None:
        if not self.pixel_blocks:
            raise MethodError(f"the {self._name()} adapter does not map image tokens to pixel blocks "
                              "(pixel_blocks is False), so pixel-space methods cannot explain this model")

    def _name(self) -> str:
        return self.family or type(self).__name__


@dataclass(frozen=True)
class Capability:
    """A declared capability and the hooks (any one of them) a class declaring it must override."""

    name: str
    hooks: tuple[str, ...]

    def check(self, cls: type[Adapter]) -> None:
        if getattr(cls, self.name) and all(getattr(cls, hook) is getattr(Adapter, hook) for hook in self.hooks):
            raise TypeError(f"{cls.__name__} declares {self.name} = True but overrides none of "
                            f"{', '.join(self.hooks)}")


CAPABILITIES = (Capability("pixel_blocks", ("token_patches", "token_pixel_blocks")),
                Capability("cross_attention_images", ("cross_attention_layers",)),
                Capability("prefix_lm", ("bidirectional_pairs",)))
