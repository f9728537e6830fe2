"""The benchmarks' model: a random "small" LLaVA with LLaVA-1.5's geometry (336 px, 576 image
tokens per image; CLIP 6 x 256, Llama 512 wide with 8 heads, 8 layers by default) and a word-level
tokenizer, built offline (no weights are downloaded)."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)


def build(device: str, layers: int = 8, dtype: torch.dtype = torch.float32):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "USER", "ASSISTANT", ":", "?", "."] + \
        "what is in the picture a red circle blue square on left right of and there".split()
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    template = ("{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
                "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} ASSISTANT :")
    ip = LlavaImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    processor = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=14, chat_template=template,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                                       num_attention_heads=4, image_size=336, patch_size=14),
        text_config=LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=layers, num_attention_heads=8,
                                num_key_value_heads=8, vocab_size=len(tok),
                                # Room for the longest benchmark sequence (14 images: 8,192 tokens), which
                                # explain checks against the context length.
                                max_position_embeddings=16384),
        image_token_index=tok.image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(device, dtype).eval().requires_grad_(False)
    return model, processor
