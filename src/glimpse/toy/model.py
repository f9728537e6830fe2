"""The toy LLaVA: a real ``LlavaForConditionalGeneration`` (small CLIP tower + small Llama) with a word-level tokenizer.

Prompt format (LLaVA-1.5 style), rendered by the processor's chat template::

    <s> USER : <image> x 196 what color is the circle ? ASSISTANT :

Every word and punctuation mark is one token, so the question appears verbatim as its own tokens. The tokenizer's
decoder is WordPiece with ``cleanup=True``: it joins words with spaces and removes the space before ``.`` and ``?``,
so ``decode(..., skip_special_tokens=True)`` gives back the world's answer text exactly (``the circle is red.``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

from glimpse.toy import world
from glimpse.toy.recipe import Dims

IMAGE_SIZE = 224
PATCH = 16
GRID = IMAGE_SIZE // PATCH  # 14 x 14 image tokens
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
CHAT_WORDS = ["USER", "ASSISTANT", ":"]

# One user turn: "USER: <image>\n{q} ", one assistant turn: "ASSISTANT: {a}</s>". Multi-turn conversations (used
# in training) simply concatenate turns; the image placeholder is rendered wherever an image item appears.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% else %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHAT_WORDS + world.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # Whitespace split, then every punctuation char becomes its own token ("circle?" -> "circle", "?").
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Punctuation("isolated")])
    # WordLevel has no decoder of its own; WordPiece(cleanup) joins with spaces and glues " ." / " ?" back.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", extra_special_tokens={"image_token": "<image>"},
                                   padding_side="left")  # left padding: batched generate is the main use


def build_processor() -> LlavaProcessor:
    image_processor = LlavaImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                             crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return LlavaProcessor(image_processor=image_processor, tokenizer=build_tokenizer(), patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE)


def build_untrained(seed: int, dims: Dims = Dims()) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Randomly initialised model (seeded) and its processor."""
    processor = build_processor()
    tok = processor.tokenizer
    vision = CLIPVisionConfig(hidden_size=dims.vision_width, intermediate_size=4 * dims.vision_width,
                              num_hidden_layers=dims.vision_layers, num_attention_heads=dims.vision_heads,
                              image_size=IMAGE_SIZE, patch_size=PATCH)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=dims.text_width, intermediate_size=dims.text_mlp,
                       num_hidden_layers=dims.text_layers, num_attention_heads=dims.text_heads,
                       num_key_value_heads=dims.text_heads, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    # vision_feature_layer=-1: the projector reads the tower's last layer, the one the dense training head supervises.
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.image_token_id,
                         vision_feature_select_strategy="default", vision_feature_layer=-1,
                         image_seq_length=GRID * GRID, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(do_sample=False, max_new_tokens=12, bos_token_id=tok.bos_token_id,
                                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return model, processor


def prompt(processor: LlavaProcessor, question: str) -> str:
    """The chat-template rendering of one image + question, ending with the generation prompt."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def save(model: LlavaForConditionalGeneration, processor: LlavaProcessor, folder: str | Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def default_model_path() -> Path:
    """The shipped, trained model folder."""
    return Path(__file__).resolve().parent / "model"
