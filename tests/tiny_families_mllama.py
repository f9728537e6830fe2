"""A tiny, random, fully offline Mllama (Llama 3.2 Vision, `MllamaForConditionalGeneration`) for tests.

Built in code (transformers 5.24, CPU, no hub): a byte-level BPE tokenizer (trained on ``tiny_models.CORPUS``)
with Llama 3's header / turn tokens, ``<|image|>`` and ``<|python_tag|>`` (which ``MllamaProcessor`` looks up),
a chat template in the style of the real checkpoint (bos, ``<|start_header_id|>role<|end_header_id|>\\n\\n``, images
first, ``<|eot_id|>``), ``MllamaImageProcessorPil`` and ``MllamaProcessor``.

Geometry: 28 px tiles, patch 7 -> a 4 x 4 grid of patches per tile plus the tile's CLS, so 17 vision keys a
tile; up to 4 tiles per image (the processor's canvas is 1x1 .. 4x1 / 1x4 / 2x2 tiles). The language model
has 5 layers; layers 1 and 3 are cross-attention layers (text queries, vision keys), the others self-attention.

Two things differ from the transformers defaults, on purpose:
* The cross-attention layers' tanh gates (``cross_attn_attn_gate``, ``cross_attn_mlp_gate``) are 0 at init, so
  the image would have no effect at all (and every gradient to the cross-attention would be exactly 0); they
  are set to 0.5 here.
* Like ``tiny_models``, the language side's Linear / Embedding weights are re-drawn from N(0, 0.2^2) (the default
  0.02 makes every attention row near uniform and GLIMPSE numerically degenerate). The vision tower and the
  projector keep the seeded transformers init.

``build(seed=0)`` -> (model, processor): float32, eval, eager attention, deterministic in ``seed``.
"""
from __future__ import annotations

from tiny_families_qwen import spread_language_weights
from tiny_models import CORPUS

BOS, EOT, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
SPECIALS = [BOS, "<|end_of_text|>", PAD, "<|start_header_id|>", "<|end_header_id|>", EOT, "<|image|>",
            "<|python_tag|>"]
TILE, PATCH, MAX_TILES = 28, 7, 4
CROSS_LAYERS = [1, 3]
GATE = 0.5

# Llama 3.2 Vision's turns: bos, then per message a header, the images, the text and <|eot_id|>.
TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for c in message['content'] if c['type'] == 'image' -%}{{ '<|image|>' }}{%- endfor -%}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}"
    "{%- endif -%}{{ '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif -%}"
)


def make_tokenizer():
    """Byte-level BPE (vocab 400) with Llama 3's specials; ``tok.image_token`` is ``<|image|>``. No post-processor:
    the chat template writes bos itself (and ``MllamaProcessor`` prepends it to a text without one)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOT, pad_token=PAD,
                                   extra_special_tokens={"image_token": "<|image|>"})


def build(seed: int = 0):
    """(model, processor): a random tiny Mllama, see the module docstring."""
    import torch
    import transformers as T

    tok = make_tokenizer()
    ip = T.MllamaImageProcessorPil(size={"height": TILE, "width": TILE}, max_image_tiles=MAX_TILES)
    processor = T.MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=TEMPLATE)
    vision = T.MllamaVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                  attention_heads=2, image_size=TILE, patch_size=PATCH, max_num_tiles=MAX_TILES,
                                  intermediate_layers_indices=[0], vision_output_dim=64)
    text = T.MllamaTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4,
                              num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=1024,
                              cross_attention_layers=CROSS_LAYERS, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = T.MllamaForConditionalGeneration(T.MllamaConfig(vision_config=vision, text_config=text,
                                                            image_token_index=tok.image_token_id))
    spread_language_weights(model, seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(GATE)
    model.set_attn_implementation("eager")
    return model.float().eval(), processor
