"""Tiny, random, fully offline tiled-image families for tests: LLaVA-NeXT, LLaVA-OneVision, Idefics3, SmolVLM.

Built in code (transformers 5.24, CPU, no hub): ``tiny_models.make_tokenizer`` plus each family's own special
tokens, a chat template in the style of the real checkpoints (with a system turn when one is given), the
family's ``*ImageProcessorPil`` and processor (LLaVA-OneVision and SmolVLM without their video slot: there is no
torchvision; see ``glimpse.loading.without_video``), and a model with 2-layer vision tower and language model.

``build(family, seed=0, aspect=..., longest=...)`` -> (model, processor); ``FAMILIES`` lists the families.

Geometry (kept tiny so every test is fast):
* LLaVA-NeXT: CLIP 28 px, patch 7 -> 4x4 tokens per tile (CLS dropped); pinpoints up to 3 tiles a side.
* LLaVA-OneVision: SigLIP 28 px, patch 7 -> 4x4 tokens per tile (no CLS); ``aspect="anyres_max_1"`` makes the
  model downsample any high-res grid of more than ~1.2 tiles' worth of tokens (the real default is anyres_max_9).
* Idefics3 / SmolVLM: 32 px tiles, patch 4 -> 8x8 patches, pixel shuffle 2 -> 4x4 = 16 tokens per tile;
  images are first resized to a longest edge of ``longest`` px (default 96: up to 3x3 tiles).

Like ``tiny_models``, the language side's Linear / Embedding weights are re-drawn from N(0, 0.2^2): the default
0.02 makes every attention row near uniform and GLIMPSE numerically degenerate.
"""
from __future__ import annotations

from glimpse.loading import without_video
from tiny_models import LM_INIT_STD, make_tokenizer

FAMILIES = ("llava_next", "llava_onevision", "idefics3", "smolvlm")

# Tokens Idefics3 / SmolVLM processors write as text: they must be single tokens, as in the real vocabularies.
IDEFICS_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
TILE = 28  # LLaVA tile side in pixels
PINPOINTS = [[TILE * r, TILE * c] for r in (1, 2, 3) for c in (1, 2, 3)]


def _template(user: str, assistant: str, end: str, image: str, system: str = "") -> str:
    """One turn per message: `system`/`user`/`assistant` prefixes, images first then text, `end` after each."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}{{ " + repr(system) + " }}"
        "{%- elif message['role'] == 'user' -%}{{ " + repr(user) + " }}"
        "{%- else -%}{{ " + repr(assistant) + " }}{%- endif -%}"
        "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
        "{%- for c in message['content'] if c['type'] == 'image' -%}{{ " + repr(image) + " }}{%- endfor -%}"
        "{%- for c in message['content'] if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}"
        "{%- endif -%}{{ " + repr(end) + " }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ " + repr(assistant.rstrip(' ')) + " }}{%- endif -%}"
    )


# LLaVA-NeXT (Mistral style), LLaVA-OneVision (chat-ml), Idefics3 / SmolVLM ("User:<image>...<end_of_utterance>").
NEXT_TEMPLATE = _template("[INST] ", "[/INST] ", " ", "<image>\n", system="[SYS] ")
ONEVISION_TEMPLATE = _template("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "<image>\n",
                               system="<|im_start|>system\n")
IDEFICS_TEMPLATE = _template("User:", "Assistant: ", "<end_of_utterance>\n", "<image>", system="System: ")


def _tokenizer(extra: list[str]):
    tok = make_tokenizer()
    tok.add_tokens(extra, special_tokens=True)
    return tok


def _text_config(tok):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=2048,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _vision(kind: str, image_size: int, patch_size: int):
    import transformers as T

    cls = {"clip": T.CLIPVisionConfig, "siglip": T.SiglipVisionConfig}.get(kind)
    cls = cls or (T.Idefics3VisionConfig if kind == "idefics3" else T.SmolVLMVisionConfig)
    return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
               image_size=image_size, patch_size=patch_size)


def _llava_next():
    import transformers as T

    tok = _tokenizer([])
    ip = T.LlavaNextImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                      image_grid_pinpoints=PINPOINTS)
    processor = T.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=7,
                                     vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                     chat_template=NEXT_TEMPLATE)
    config = T.LlavaNextConfig(vision_config=_vision("clip", TILE, 7), text_config=_text_config(tok),
                               image_token_index=tok.image_token_id, vision_feature_select_strategy="default",
                               vision_feature_layer=-2, image_grid_pinpoints=PINPOINTS)
    return T.LlavaNextForConditionalGeneration, config, processor


def _llava_onevision(aspect):
    import transformers as T

    tok = _tokenizer(["<video>", "<|im_start|>", "<|im_end|>"])
    ip = T.LlavaOnevisionImageProcessorPil(size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS)
    processor = without_video(T.LlavaOnevisionProcessor)(
        image_processor=ip, tokenizer=tok, num_image_tokens=(TILE // 7) ** 2,
        vision_feature_select_strategy="full", vision_aspect_ratio=aspect, chat_template=ONEVISION_TEMPLATE)
    config = T.LlavaOnevisionConfig(
        vision_config=_vision("siglip", TILE, 7), text_config=_text_config(tok), image_token_index=tok.image_token_id,
        video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=PINPOINTS, vision_aspect_ratio=aspect)
    return T.LlavaOnevisionForConditionalGeneration, config, processor


def _idefics(family: str, longest: int):
    import transformers as T

    tok = _tokenizer(IDEFICS_TOKENS)
    sizes = dict(size={"longest_edge": longest}, max_image_size={"longest_edge": 32})
    if family == "idefics3":
        processor = T.Idefics3Processor(image_processor=T.Idefics3ImageProcessorPil(**sizes), tokenizer=tok,
                                        image_seq_len=16, chat_template=IDEFICS_TEMPLATE)
        config_cls, model_cls = T.Idefics3Config, T.Idefics3ForConditionalGeneration
    else:
        processor = without_video(T.SmolVLMProcessor)(image_processor=T.SmolVLMImageProcessorPil(**sizes),
                                                      tokenizer=tok, video_processor=None, image_seq_len=16,
                                                      chat_template=IDEFICS_TEMPLATE)
        config_cls, model_cls = T.SmolVLMConfig, T.SmolVLMForConditionalGeneration
    config = config_cls(vision_config=_vision(family, 32, 4), text_config=_text_config(processor.tokenizer),
                        image_token_id=processor.image_token_id, scale_factor=2)
    return model_cls, config, processor


def build(family: str, seed: int = 0, *, aspect: str = "anyres_max_9", longest: int = 96):
    """(model, processor) of `family`: float32, eval, eager attention, deterministic in `seed`."""
    import torch

    if family == "llava_next":
        model_cls, config, processor = _llava_next()
    elif family == "llava_onevision":
        model_cls, config, processor = _llava_onevision(aspect)
    elif family in ("idefics3", "smolvlm"):
        model_cls, config, processor = _idefics(family, longest)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    torch.manual_seed(seed)
    model = model_cls(config)
    _spread_language_weights(model, vision_tower(model), seed)
    model.set_attn_implementation("eager")
    return model.float().eval(), processor


def vision_tower(model):
    inner = model.model
    return getattr(inner, "vision_tower", None) or inner.vision_model


def language_model(model):
    inner = model.model
    return getattr(inner, "language_model", None) or inner.text_model


def _spread_language_weights(model, vision, seed: int) -> None:
    """Every Linear / Embedding weight outside the vision tower from N(0, LM_INIT_STD^2), biases 0."""
    import torch

    gen = torch.Generator().manual_seed(seed + 4242)
    frozen = {id(p) for p in vision.parameters()}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)) and id(module.weight) not in frozen:
                module.weight.normal_(0.0, LM_INIT_STD, generator=gen)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
