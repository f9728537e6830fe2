"""A tiny, random, fully offline Aya Vision (`AyaVisionForConditionalGeneration`) for tests.

Built in code (transformers 5.24, CPU, no hub): the chat-ml tokenizer and template of ``tiny_families_qwen`` with
Aya Vision's image tokens, ``GotOcr2ImageProcessorPil`` (tiles + thumbnail) and ``AyaVisionProcessor``, a 2-layer
SigLIP vision tower and a 2-layer Cohere 2 language model.

Geometry: 32 px tiles, patch 4 -> 8 x 8 patches, pixel shuffle 2 -> a 4 x 4 grid of 16 tokens (8 px each) per
tile; up to 4 tiles per image, plus the thumbnail when there is more than one.

``build(seed=0)`` -> (model, processor): float32, eval, eager attention, deterministic in ``seed``.
"""
from __future__ import annotations

from tiny_families_qwen import chatml_template, make_tokenizer, spread_language_weights

TOKENS = {"image_token": "<image>", "img_patch_token": "<|IMG_PATCH|>", "start_of_img_token": "<|START_OF_IMG|>",
          "end_of_img_token": "<|END_OF_IMG|>", "img_line_break_token": "<|IMG_LINE_BREAK|>"}


def build(seed: int = 0):
    import torch
    import transformers as T

    tok = make_tokenizer(TOKENS)
    ip = T.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                    max_patches=4)
    processor = T.AyaVisionProcessor(image_processor=ip, tokenizer=tok, patch_size=4, img_size=32,
                                     downsample_factor=2, chat_template=chatml_template("<image>"))
    vision = T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=4)
    text = T.Cohere2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                           sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                           bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = T.AyaVisionConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
                               downsample_factor=2, vision_feature_select_strategy="full", vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = T.AyaVisionForConditionalGeneration(config)
    spread_language_weights(model, seed)
    model.set_attn_implementation("eager")
    return model.float().eval(), processor
