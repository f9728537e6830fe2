"""Tiny, random, fully offline Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5 and InternVL models for tests.

Everything is built in code (transformers 5.24, CPU, no hub): a chat-ml tokenizer (byte-level BPE trained on
``tiny_models.CORPUS``) with the family's named multimodal tokens, a chat template in the style of the real
checkpoints (chat-ml turns, a default system prompt), the family's ``*ImageProcessorPil`` and its processor
without a video slot (torchvision is missing; see ``glimpse.loading.without_video``), and a model with a
2-layer vision tower and a 2-layer language model (Qwen3.5: 4 layers, linear / full attention alternating).

``build(family, seed=0)`` -> (model, processor); ``FAMILIES`` lists the families.
``save_qwen2_vl(folder)`` writes a folder laid out like a hub repository (see its docstring).

The language model's Linear / Embedding weights are re-drawn from N(0, 0.2^2) (as ``tiny_models`` does for
LLaVA, for the same reason: the default 0.02 makes every attention row uniform and GLIMPSE degenerate).
"""
from __future__ import annotations

import json
from pathlib import Path

from glimpse.loading import without_video
from tiny_models import CORPUS, LM_INIT_STD

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "internvl")
QWEN_FAMILIES = FAMILIES[:4]

CHAT = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_TOKENS = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}
INTERNVL_TOKENS = {"context_image_token": "<IMG_CONTEXT>", "start_image_token": "<img>",
                   "end_image_token": "</img>", "video_token": "<video>"}
PLACEHOLDER = {"qwen": "<|vision_start|><|image_pad|><|vision_end|>", "internvl": "<IMG_CONTEXT>\n"}
DEFAULT_SYSTEM = "You are a helpful assistant."


def chatml_template(placeholder: str) -> str:
    """Chat-ml turns like the Qwen / InternVL checkpoints: a default system turn, images before text."""
    return (
        "{%- for message in messages -%}"
        "{%- if loop.first and message['role'] != 'system' -%}"
        "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
        "{%- endif -%}"
        "{{ '<|im_start|>' + message['role'] + '\\n' }}"
        "{%- if message['content'] is string -%}{{ message['content'] }}"
        "{%- else -%}{%- for c in message['content'] -%}"
        "{%- if c['type'] == 'image' -%}{{ " + repr(placeholder) + " }}"
        "{%- elif c['type'] == 'text' -%}{{ c['text'] }}{%- endif -%}"
        "{%- endfor -%}{%- endif -%}"
        "{{ '<|im_end|>\\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def make_tokenizer(named: dict[str, str]):
    """Byte-level BPE (vocab 400) with chat-ml specials; `named` become tok.<name> / tok.<name>_id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = CHAT + list(named.values())
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   extra_special_tokens=named)


def _text(tok, **kw) -> dict:
    return {**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024, bos_token_id=None,
                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id), **kw}


def _rope(**extra) -> dict:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], **extra}}


def _qwen(family: str):
    import transformers as T

    tok = make_tokenizer(QWEN_TOKENS)
    patch = 16 if family in ("qwen3_vl", "qwen3_5") else 14
    factor = 2 * patch
    # min / max pixels of 4 and 16 merged tokens keep every grid tiny (2..16 tokens).
    ip = T.Qwen2VLImageProcessorPil(size={"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 16},
                                    patch_size=patch, merge_size=2, temporal_patch_size=2)
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=patch, spatial_merge_size=2, temporal_patch_size=2)
    ids = dict(image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
               vision_start_token_id=tok.vision_start_token_id, vision_end_token_id=tok.vision_end_token_id)
    if family == "qwen2_vl":
        processor_cls, model_cls = T.Qwen2VLProcessor, T.Qwen2VLForConditionalGeneration
        config = T.Qwen2VLConfig(text_config=T.Qwen2VLTextConfig(**_text(tok), **_rope()),
                                 vision_config=T.Qwen2VLVisionConfig(embed_dim=32, mlp_ratio=2, **vision), **ids)
    elif family == "qwen2_5_vl":
        processor_cls, model_cls = T.Qwen2_5_VLProcessor, T.Qwen2_5_VLForConditionalGeneration
        # window 56 px = 2x2 merged tokens: images of more than 2x2 tokens really use window attention.
        vc = T.Qwen2_5_VLVisionConfig(intermediate_size=64, out_hidden_size=32, window_size=56,
                                      fullatt_block_indexes=[1], **vision)
        tc = T.Qwen2_5_VLTextConfig(**_text(tok), **_rope())
        config = T.Qwen2_5_VLConfig(text_config=tc, vision_config=vc, **ids)
    elif family == "qwen3_vl":
        processor_cls, model_cls = T.Qwen3VLProcessor, T.Qwen3VLForConditionalGeneration
        vc = T.Qwen3VLVisionConfig(intermediate_size=64, out_hidden_size=32, num_position_embeddings=64,
                                   deepstack_visual_indexes=[0], **vision)
        tc = T.Qwen3VLTextConfig(**_text(tok), head_dim=8, **_rope(mrope_interleaved=True))
        config = T.Qwen3VLConfig(text_config=tc, vision_config=vc, **ids)
    else:
        processor_cls, model_cls = T.Qwen3VLProcessor, T.Qwen3_5ForConditionalGeneration
        tc = T.Qwen3_5TextConfig(
            **_text(tok, num_hidden_layers=4), head_dim=8,
            layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
            linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
            **_rope(mrope_interleaved=True, partial_rotary_factor=0.5))
        vc = T.Qwen3_5VisionConfig(intermediate_size=64, out_hidden_size=32, num_position_embeddings=64, **vision)
        config = T.Qwen3_5Config(text_config=tc, vision_config=vc, **ids)
    processor = without_video(processor_cls)(image_processor=ip, tokenizer=tok,
                                        chat_template=chatml_template(PLACEHOLDER["qwen"]))
    return model_cls, config, processor


def _internvl():
    import transformers as T

    tok = make_tokenizer(INTERNVL_TOKENS)
    # 32 px tiles, patch 8 -> 4x4 patches, pixel shuffle 0.5 -> 2x2 = 4 tokens per tile; up to 4 tiles + thumbnail.
    ip = T.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                    max_patches=4)
    processor = without_video(T.InternVLProcessor)(image_processor=ip, tokenizer=tok, image_seq_length=4,
                                              chat_template=chatml_template(PLACEHOLDER["internvl"]))
    vc = T.InternVLVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=[32, 32], patch_size=[8, 8])
    config = T.InternVLConfig(vision_config=vc, text_config=T.Qwen2Config(**_text(tok)),
                              image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5)
    return T.InternVLForConditionalGeneration, config, processor


def build(family: str, seed: int = 0):
    """(model, processor) of `family`: float32, eval, eager attention, deterministic in `seed`."""
    import torch

    model_cls, config, processor = _internvl() if family == "internvl" else _qwen(family)
    torch.manual_seed(seed)
    model = model_cls(config)
    spread_language_weights(model, seed)
    model.set_attn_implementation("eager")
    return model.float().eval(), processor


def spread_language_weights(model, seed: int, std: float = LM_INIT_STD) -> None:
    """Re-draw the language model's and lm_head's Linear / Embedding weights from N(0, std^2), biases 0."""
    import torch

    gen = torch.Generator().manual_seed(seed + 777)
    with torch.no_grad():
        for part in (model.model.language_model, model.lm_head):
            for module in part.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                    if getattr(module, "bias", None) is not None:
                        module.bias.zero_()


def save_qwen2_vl(folder, seed: int = 0) -> Path:
    """Save a tiny Qwen2-VL laid out like its hub repository.

    The parts are written one by one, as the hub repositories hold them: the model, the tokenizer
    (tokenizer.json, tokenizer_config.json), the image processor on its own
    (preprocessor_config.json), the chat template (chat_template.jinja) and a processor_config.json
    that only names the processor class. (A processor with its video slot cannot be saved at all
    without a video processor.)
    """
    folder = Path(folder)
    model, processor = build("qwen2_vl", seed)
    model.save_pretrained(folder)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(processor.chat_template)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
    return folder
