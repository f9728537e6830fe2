"""The adapter interface: everything family-specific about a vision-language model.

An adapter knows how a family builds its prompt, where its image tokens sit, how each image's
token grid maps back to the original pixels, and how to extend its inputs with answer tokens.
The rest of glimpse (capture, methods, the result object) never looks at the model family.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Sequence

import torch
from PIL import Image

from ..errors import AnswerError, CaptureError, ImageError, PromptError
from ..layout import SEQUENCE, ImageLayout, SequenceLayout

# Which [channels, H, W] frame of pixel_values: its index along the leading axes, an int for 4-D
# pixel_values ([frames, 3, H, W]), a tuple for 5-D ones (LLaVA-NeXT: (image, tile); Idefics3: (sample, frame)).
FrameIndex = int | tuple[int, ...]
# (frame index, y0, y1, x0, x1): the block pixel_values[index][:, y0:y1, x0:x1].
PixelPatch = tuple[FrameIndex, int, int, int, int]

# Inputs that hold one value per sequence position and must grow with the answer.
PER_TOKEN_INPUTS = ("token_type_ids", "mm_token_type_ids")


class Adapter:
    """Base adapter; a family subclasses it and overrides `image_layouts` (and more if needed)."""

    family: ClassVar[str] = ""
    architectures: ClassVar[tuple[str, ...]] = ()
    # Sub-config of the language model, whose attention glimpse captures.
    text_config_key: ClassVar[str] = "text_config"

    def __init__(self, model: Any, processor: Any) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)

    @classmethod
    def matches(cls, model: Any) -> bool:
        return type(model).__name__ in cls.architectures

    def cross_attention_layers(self) -> tuple[int, ...]:
        """Language-model layers whose attention is cross-attention (text queries, vision keys).

        None in a decoder-only family; capture records these separately (no causal structure: their
        keys are not sequence positions) and methods map images through them (see Mllama)."""
        return ()

    # --- prompt -------------------------------------------------------------------------------
    def render_prompt(self, question: str, n_images: int, system_prompt: str | None = None) -> str:
        """The chat-template text for one user turn with `n_images` images and the question."""
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
        messages = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
        return self._apply_chat_template(messages)

    def _apply_chat_template(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, images: Sequence[Image.Image], text: str) -> dict[str, torch.Tensor]:
        try:
            batch = self.processor(images=list(images), text=text, return_tensors="pt")
        except ValueError as exc:
            # e.g. an image smaller than the processor's minimum size: the user's input, not a bug
            sizes = ", ".join(f"{im.width}x{im.height}" for im in images)
            raise ImageError(f"the model's processor cannot prepare the image(s) ({sizes}): {exc}") from None
        return {k: v for k, v in batch.items() if k != "labels"}

    def answer_ids(self, prompt_text: str, answer: str) -> list[int]:
        """Token ids of `answer` as they follow the prompt.

        Tokenising prompt and answer together keeps merges at the boundary as the model would
        produce them; if the prompt's tokens are not a prefix of the joint ones, the answer is
        tokenised alone.
        """
        if not answer.strip():
            raise AnswerError("the answer to explain is empty")
        joiner = "" if (not prompt_text or prompt_text[-1].isspace() or answer[0].isspace()) else " "
        prompt_ids = self.tokenizer(prompt_text)["input_ids"]
        joint_ids = self.tokenizer(prompt_text + joiner + answer)["input_ids"]
        if joint_ids[: len(prompt_ids)] == prompt_ids and len(joint_ids) > len(prompt_ids):
            ids = joint_ids[len(prompt_ids):]
        else:
            ids = self.tokenizer(joiner + answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise AnswerError(f"the answer {answer!r} tokenizes to nothing")
        return list(ids)

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

    def bidirectional_pairs(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> torch.Tensor | None:
        """Boolean [N, N]: the (query, key) pairs where attending to a LATER key is legitimate in
        this family (a bidirectional prefix or image block), or None for a strictly causal model.

        Capture accepts future attention at exactly these pairs and rejects any other. Derive them
        from the layout, never from the per-token inputs the model builds its mask from, or a wrong
        input would pass as its own allowance."""
        return None

    # --- layout -------------------------------------------------------------------------------
    def image_layouts(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image]) -> list[ImageLayout]:
        raise NotImplementedError

    def image_token_positions(self, inputs: dict[str, torch.Tensor]) -> list[int]:
        """Sequence positions holding the model's image token id."""
        return torch.nonzero(inputs["input_ids"][0] == self.model.config.image_token_id).flatten().tolist()

    def token_patches(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[PixelPatch]:
        """For every image token (in `layout.image_positions` order), the block of `pixel_values`
        it sees: (frame index along pixel_values' leading axes, y0, y1, x0, x1); see `PixelPatch`.
        A token that mixes several frames (LLaVA-OneVision's downsampling across a tile seam) gets
        its block in the frame it draws on most. Pixel-space methods pool and occlude through this."""
        raise NotImplementedError

    def token_pixel_blocks(self, inputs: dict[str, torch.Tensor], layout: SequenceLayout) -> list[tuple]:
        """For every image token, the index into `pixel_values` of the elements it sees (pooling and
        occlusion use it). Image-shaped pixel_values derive it from `token_patches`; adapters whose
        processor flattens patches (Qwen-VL) override it."""
        return [block_index(patch) for patch in self.token_patches(inputs, layout)]

    def black_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """A black image in the processor's normalised pixel space, shaped like `pixels`:
        (0 - mean) / std per channel, channels on the third axis from the end."""
        return _expand_channels(self._black_per_channel(pixels), pixels, pixels.dim() - 3)

    def _black_per_channel(self, pixels: torch.Tensor) -> torch.Tensor:
        processor = getattr(self.processor, "image_processor", None)
        if processor is None or not getattr(processor, "do_normalize", True):
            return torch.zeros(pixels.shape[-3] if pixels.dim() >= 3 else 1)
        mean = torch.as_tensor(processor.image_mean, dtype=torch.float32)
        return -mean / torch.as_tensor(processor.image_std, dtype=torch.float32)

    def question_span(self, input_ids: Sequence[int], prompt_text: str,
                      question: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Positions of the question's own tokens (not system prompt or template), with each
        token's character span inside `question`.

        The question's tokens are found by tokenising the rendered prompt with character offsets,
        then located as a run inside the processor's ids (which differ only by expanded image
        tokens). Returns ([], []) when the question cannot be located.
        """
        start = prompt_text.rfind(question)
        if start < 0:
            return [], []
        end = start + len(question)
        enc = self.tokenizer(prompt_text, add_special_tokens=False, return_offsets_mapping=True)
        picked = [(tid, (a - start, b - start)) for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
                  if a < end and b > start and b > a]
        positions = _find_last_run(list(input_ids), [tid for tid, _ in picked])
        return positions, ([span for _, span in picked] if positions else [])

    def layout(self, inputs: dict[str, torch.Tensor], images: Sequence[Image.Image], prompt_text: str,
               question: str, n_answer: int) -> SequenceLayout:
        ids = inputs["input_ids"][0].tolist()
        images_layout = tuple(self.image_layouts(inputs, images))
        length = len(ids)
        answer = tuple(range(length - n_answer, length))
        prompt, spans = self.question_span(ids[: length - n_answer], prompt_text, question)
        if prompt:
            words, word_of = words_of_spans(question, spans)
        else:
            prompt = self._fallback_prompt(ids[: length - n_answer], images_layout)
            words = tuple(self.tokenizer.decode([ids[p]]).strip() for p in prompt)
            word_of = tuple(range(len(prompt)))
        if not prompt:
            raise PromptError("the prompt has no text tokens to explain")
        return SequenceLayout(images_layout, tuple(prompt), answer, length, words, word_of, bool(spans))

    def _fallback_prompt(self, ids: list[int], images: Sequence[ImageLayout]) -> list[int]:
        """All non-image, non-special prompt tokens: the method's documented fallback for P."""
        # Vision-key indices (cross-attention families) are not sequence positions: nothing to exclude.
        image_positions = {p for image in images if image.positions_axis == SEQUENCE for p in image.positions}
        special = set(self.tokenizer.all_special_ids)
        return [i for i, t in enumerate(ids) if i not in image_positions and t not in special]


def words_of_spans(text: str, spans: Sequence[tuple[int, int]]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Merge sub-word tokens into the whitespace-separated words of `text` they fall in."""
    words = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", text)]
    word_of, used = [], []
    for a, b in spans:
        index = next((i for i, (ws, we, _) in enumerate(words) if a < we and b > ws), None)
        if index is None:  # a token of pure whitespace: attach it to the next word
            index = next((i for i, (ws, _, _) in enumerate(words) if ws >= a), len(words) - 1)
        word_of.append(index)
    # Keep only words that own a token, renumbered in order.
    for index in word_of:
        if index not in used:
            used.append(index)
    return tuple(words[i][2] for i in used), tuple(used.index(i) for i in word_of)


def _find_last_run(haystack: list[int], needle: list[int]) -> list[int]:
    if not needle:
        return []
    n = len(needle)
    for start in range(len(haystack) - n, -1, -1):
        if haystack[start:start + n] == needle:
            return list(range(start, start + n))
    return []


def split_image_runs(positions: Sequence[int], counts: Sequence[int]) -> list[tuple[int, ...]]:
    """Split the image-token positions of several images into one contiguous run per image.

    `counts` is how many tokens each image should have, as the processor's geometry says; a total
    or a run that disagrees means processor and model configuration do not match.
    """
    if sum(counts) != len(positions):
        raise CaptureError(f"found {len(positions)} image tokens where the processor's geometry gives "
                           f"{' + '.join(map(str, counts))}; the processor and model configuration disagree")
    runs, start = [], 0
    for count in counts:
        run = tuple(positions[start:start + count])
        if run and run[-1] - run[0] != count - 1:
            raise CaptureError(f"the image tokens at {run[0]}..{run[-1]} are not one contiguous run of {count}")
        runs.append(run)
        start += count
    return runs


def grid_patches(index: FrameIndex, rows: int, cols: int, height: int, width: int) -> list[PixelPatch]:
    """Row-major pixel blocks of a rows x cols token grid laid evenly over one height x width frame."""
    ph, pw = height // rows, width // cols
    return [(index, r * ph, (r + 1) * ph, c * pw, (c + 1) * pw) for r in range(rows) for c in range(cols)]


def block_index(patch: PixelPatch) -> tuple:
    """The index of a token's block in pixel_values: frame index (int or tuple), all channels, rows, columns."""
    frame, y0, y1, x0, x1 = patch
    return (*(frame if isinstance(frame, tuple) else (frame,)), slice(None), slice(y0, y1), slice(x0, x1))


def _expand_channels(per_channel: torch.Tensor, like: torch.Tensor, axis: int) -> torch.Tensor:
    """`per_channel` values broadcast along `axis` of a tensor shaped like `like`."""
    shape = [1] * like.dim()
    shape[axis] = -1
    return per_channel.to(like).view(shape).expand_as(like).clone()


def block_pairs(length: int, blocks: Sequence[Sequence[int]]) -> torch.Tensor:
    """Boolean [length, length] that is True wherever query and key lie in the same block."""
    pairs = torch.zeros(length, length, dtype=torch.bool)
    for block in blocks:
        index = torch.tensor(list(block), dtype=torch.long)
        pairs[index[:, None], index[None, :]] = True
    return pairs
