"""Tiny, random, fully offline PaliGemma, PaliGemma 2 and Gemma 3 models for tests.

Built in code (transformers 5.24, CPU, no hub): ``tiny_families_qwen.make_tokenizer`` (byte-level BPE) with
Gemma's ``<bos>`` / ``<eos>`` and the family's named image tokens, the family's processor around its
``*ImageProcessorPil``, and a model with a 2-layer SigLIP vision tower and a 2-layer Gemma language model.

``build(family, seed=0, pan_and_scan=False)`` -> (model, processor); ``FAMILIES`` lists the families.

Geometry (kept tiny so every test is fast):
* PaliGemma / PaliGemma 2: SigLIP 40 px, patch 8 -> a 5 x 5 grid, 25 image tokens (8 px each) per image.
  No chat template: the processor writes ``<image>``... + ``<bos>`` + prompt + ``\\n``. PaliGemma 2 has a
  Gemma 2 language model (sliding-window layer, attention and final-logit soft-capping).
* Gemma 3: SigLIP 48 px, patch 8 -> 6 x 6 patches, average-pooled 2 x 2 -> a 3 x 3 grid, 9 image tokens (16 px
  each) per image or pan-and-scan crop. A Gemma-3-style chat template (``<start_of_turn>user`` ... the system
  prompt folded into the first user turn, as the real template does). ``pan_and_scan=True`` makes the
  processor cut images of aspect >= 1.2 into 2..4 crops (minimum crop side 8 px instead of the real 256).

Weights: as in the other tiny families, every Linear / Embedding outside the vision tower is re-drawn from
N(0, LM_INIT_STD^2) (the default 0.02 makes attention near uniform). Gemma 3's projector matrix
``mm_input_projection_weight`` is a bare parameter that transformers initialises to ZERO (every image embedding
would be 0 and no gradient would reach the pixels), so it is re-drawn too.
"""
from __future__ import annotations

from tiny_families_qwen import make_tokenizer
from tiny_families_tiles import _spread_language_weights
from tiny_models import LM_INIT_STD

FAMILIES = ("paligemma", "paligemma2", "gemma3")

GEMMA3_TOKENS = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
TURNS = ["<start_of_turn>", "<end_of_turn>"]

# Gemma 3 style: bos, one turn per message ("assistant" is "model"), a system prompt folded into the first user
# turn, every image item as the placeholder <start_of_image> (the processor expands it), then the text items.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{%- set ns.system = ns.system + c['text'] + '\\n\\n' -%}"
    "{%- endfor -%}"
    "{%- else -%}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' + ns.system }}"
    "{%- set ns.system = '' -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}{%- else -%}"
    "{%- for c in message['content'] if c['type'] == 'image' -%}{{ '<start_of_image>' }}{%- endfor -%}"
    "{%- for c in message['content'] if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}"
    "{%- endif -%}{{ '<end_of_turn>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


def _tokenizer(named: dict[str, str]):
    tok = make_tokenizer(named)
    # Gemma's own bos / eos; the processors read tok.bos_token (PaliGemma writes it after the image tokens).
    tok.add_special_tokens({"bos_token": "<bos>", "eos_token": "<eos>"})
    tok.add_tokens(TURNS, special_tokens=True)
    return tok


def _text(tok, **kw) -> dict:
    return {**dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8, vocab_size=len(tok), max_position_embeddings=1024,
                   bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
            **kw}


def _siglip(image_size: int):
    import transformers as T

    return T.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=image_size, patch_size=8)


def _paligemma(family: str):
    import transformers as T

    tok = _tokenizer({"image_token": "<image>"})
    ip = T.SiglipImageProcessorPil(size={"height": 40, "width": 40})
    ip.image_seq_length = 25  # the processor reads it from the image processor
    # The processor adds 1024 <locXXXX> + 128 <segXXX> tokens: the vocabulary size is read after building it.
    processor = T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    if family == "paligemma":
        text = T.GemmaConfig(**_text(tok))
    else:
        text = T.Gemma2Config(**_text(tok), query_pre_attn_scalar=8, sliding_window=16,
                              layer_types=["sliding_attention", "full_attention"])
    config = T.PaliGemmaConfig(vision_config=_siglip(40), text_config=text, image_token_index=tok.image_token_id,
                               vocab_size=len(tok), projection_dim=32, hidden_size=32)
    return T.PaliGemmaForConditionalGeneration, config, processor


def _gemma3(pan_and_scan: bool):
    import transformers as T

    tok = _tokenizer(GEMMA3_TOKENS)
    processor = T.Gemma3Processor(image_processor=T.Gemma3ImageProcessorPil(size={"height": 48, "width": 48}),
                                  tokenizer=tok, image_seq_length=9, chat_template=GEMMA3_TEMPLATE)
    if pan_and_scan:
        # Processor-level defaults override the image processor's attributes, so the switch goes here.
        processor.images_kwargs = {**processor.images_kwargs, "do_pan_and_scan": True,
                                   "pan_and_scan_min_crop_size": 8}
    text = T.Gemma3TextConfig(**_text(tok), sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    config = T.Gemma3Config(vision_config=_siglip(48), text_config=text, mm_tokens_per_image=9,
                            image_token_index=tok.image_token_id, boi_token_index=tok.boi_token_id,
                            eoi_token_index=tok.eoi_token_id)
    return T.Gemma3ForConditionalGeneration, config, processor


def build(family: str, seed: int = 0, *, pan_and_scan: bool = False):
    """(model, processor) of `family`: float32, eval, eager attention, deterministic in `seed`."""
    import torch

    if family in ("paligemma", "paligemma2"):
        model_cls, config, processor = _paligemma(family)
    elif family == "gemma3":
        model_cls, config, processor = _gemma3(pan_and_scan)
    else:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    torch.manual_seed(seed)
    model = model_cls(config)
    _spread_language_weights(model, model.model.vision_tower, seed)
    projector = getattr(model.model.multi_modal_projector, "mm_input_projection_weight", None)
    if projector is not None:  # Gemma 3: zero-initialised, see the module docstring
        with torch.no_grad():
            projector.normal_(0.0, LM_INIT_STD, generator=torch.Generator().manual_seed(seed + 99))
    model.set_attn_implementation("eager")
    return model.float().eval(), processor
