"""Tiny, random, fully offline LLaVA-1.5 models for tests (transformers 5.x, CPU).

Everything here is built in code: a byte-level BPE tokenizer trained on a few sentences, a LLaVA-1.5 style
chat template, a ``LlavaProcessor`` around ``LlavaImageProcessorPil`` and a ``LlavaForConditionalGeneration``
(CLIP vision tower + Llama language model) with random but seed-deterministic weights. No model hub access.

Public helpers
--------------
``make_tokenizer()``           -> PreTrainedTokenizerFast (vocab ~400, ``tok.image_token_id``, bos added like Llama)
``LLAVA_TEMPLATE``             -> Jinja chat template, llava-1.5 style (``USER: <image>\\n{text} ASSISTANT:``)
``build_tiny_llava(seed, ...)``-> (model, processor)
``save_tiny_llava(folder, ...)``-> folder loadable with AutoProcessor / AutoModelForImageTextToText offline
``rand_image(w, h, seed, mode)``-> PIL noise image
``build_case(model, processor, ...)`` -> a teacher-forced input with answer / image / prompt positions

Initialisation (why it is not the transformers default)
-------------------------------------------------------
With the default ``initializer_range=0.02`` and hidden size 32, query/key projections are so small that every
attention row is almost exactly uniform over its causal prefix and the logits are nearly constant: GLIMPSE
quantities (ReLU(grad * A), head softmax, layer evidence) come out numerically degenerate. After the
(seeded) construction we therefore re-draw every ``nn.Linear`` / ``nn.Embedding`` weight of the LANGUAGE
MODEL, the ``lm_head`` and the multimodal projector from N(0, ``LM_INIT_STD``**2) with ``LM_INIT_STD = 0.2``
(10x the default), using a dedicated ``torch.Generator`` seeded with ``seed`` (biases -> 0, RMSNorm
weights stay 1). With hidden 32 and head_dim 8 this gives q, k entries of std ~1.1 and pre-softmax scores of
std ~1.1-1.2 (measured): attention rows are clearly peaked but not one-hot (mean row entropy ~0.8 of the uniform
row's, vs 0.99997 with the default init) and raw logits have std ~1.1 (vs ~0.11). The CLIP vision
tower keeps the transformers init drawn after ``torch.manual_seed(seed)``; it only has to make image tokens
differ from each other (the LM attention is what GLIMPSE reads).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# heavy imports (torch / transformers / tokenizers) are done lazily inside the functions, so that importing this
# module (e.g. from conftest.py) stays cheap.

LM_INIT_STD = 0.2

IMAGE_TOKEN = "<image>"
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"

CORPUS = [
    "what color is the object? describe the image.",
    "a red circle on the left and a blue square on the right.",
    "What color is the object in the image?",
    "Describe the image. The image shows a red circle on the left.",
    "USER: what is in the picture? ASSISTANT: a green triangle at the top.",
    "there is a small yellow star in the middle of the image.",
    "how many objects are there? there are two objects.",
    "is the circle red or blue? the circle is red.",
    "a dog and a cat are sitting next to a tree.",
    "the background is white and the object is black.",
    "Answer the question with a single word. Yes. No. Left. Right.",
    "You are a helpful assistant that describes images.",
]

# llava-1.5 style: optional system text, then "USER: " + one "<image>\n" per image + the text, " ASSISTANT:".
# Assistant turns render their text followed by the eos token, like llava-1.5's "</s>" turn separator.
LLAVA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set items = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}"
    "{%- set items = message['content'] -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for c in items if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' }}"
    "{%- for c in items if c['type'] == 'image' -%}{{ '<image>\n' }}{%- endfor -%}"
    "{%- for c in items if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}{{ ' ' }}"
    "{%- else -%}"
    "{{ 'ASSISTANT: ' }}"
    "{%- for c in items if c['type'] == 'text' -%}{{ c['text'] }}{%- endfor -%}{{ '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def make_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None):
    """Byte-level BPE trained offline on ``CORPUS``, wrapped as a ``PreTrainedTokenizerFast``.

    Specials: ``<pad>`` (id 0), ``<s>`` (bos, 1), ``</s>`` (eos, 2), ``<unk>`` (3), ``<image>`` (4).
    ``tok.image_token`` / ``tok.image_token_id`` exist (``extra_special_tokens``). A template post-processor
    prepends bos to every encoding with ``add_special_tokens=True`` (like the Llama tokenizers).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK, IMAGE_TOKEN]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(corpus or CORPUS), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                   extra_special_tokens={"image_token": IMAGE_TOKEN})


def make_processor(image_size: int = 56, patch_size: int = 14, crop: bool = True, tokenizer=None):
    """``LlavaProcessor`` around ``LlavaImageProcessorPil``.

    crop=True : resize the shortest edge to ``image_size`` (bicubic), centre-crop ``image_size`` x ``image_size``
                (llava-hf default geometry).
    crop=False: ``do_pad=True`` -> ``LlavaImageProcessorPil.pad_to_square`` pads the image (centred) to a square of its
                longest edge with the background colour ``tuple(int(m * 255) for m in image_mean)`` (the CLIP mean
                colour, like llava-1.5's expand2square), then the square is resized to ``image_size`` x ``image_size``;
                no crop. (In transformers 5.24 padding only exists as this pad-to-square-before-resize step; there
                is no pad-to-size / pad-after-resize option in this image processor.)
    """
    from transformers import LlavaImageProcessorPil, LlavaProcessor

    tok = tokenizer if tokenizer is not None else make_tokenizer()
    ip = LlavaImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
                                do_center_crop=crop, do_pad=not crop)
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=LLAVA_TEMPLATE)


def _reinit_language_side(model, seed: int, std: float = LM_INIT_STD) -> None:
    """Re-draw LM / lm_head / projector weights from N(0, std^2) with a generator seeded by ``seed``."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(int(seed) + 12345)
    parts = [model.model.language_model, model.model.multi_modal_projector, model.lm_head]
    seen = set()
    with torch.no_grad():
        for part in parts:
            for module in part.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)) and id(module.weight) not in seen:
                    seen.add(id(module.weight))
                    w = torch.randn(module.weight.shape, generator=gen, dtype=torch.float32) * std
                    module.weight.copy_(w)
                    if isinstance(module, nn.Linear) and module.bias is not None:
                        module.bias.zero_()


def build_tiny_llava(seed: int = 0, *, image_size: int = 56, patch_size: int = 14, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, hidden: int = 32, crop: bool = True):
    """Random tiny LLaVA-1.5: returns ``(model, processor)``.

    CLIP vision tower (2 layers, hidden 32, 2 heads, ``image_size`` / ``patch_size`` -> (image_size/patch)^2 image
    tokens, CLS dropped by ``vision_feature_select_strategy="default"``, features from ``vision_feature_layer=-2``),
    Llama LM with ``layers`` layers, ``heads`` heads, ``kv_heads`` KV heads (GQA), hidden ``hidden``.
    Deterministic in ``seed``; float32, eval mode, eager attention everywhere. See the module docstring for the init.
    """
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    proc = make_processor(image_size=image_size, patch_size=patch_size, crop=crop)
    tok = proc.tokenizer
    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=image_size, patch_size=patch_size)
    tc = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=len(tok),
                     max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, initializer_range=LM_INIT_STD)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, image_token_index=tok.image_token_id,
                      vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    _reinit_language_side(model, seed)
    model = model.float()
    model.set_attn_implementation("eager")
    model.eval()
    return model, proc


def save_tiny_llava(folder, **kw) -> Path:
    """Build (``build_tiny_llava(**kw)``) and save model + processor into ``folder``.

    ``AutoProcessor.from_pretrained(folder)`` and
    ``AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager")`` load it with
    ``HF_HUB_OFFLINE=1``; the reloaded model gives identical logits (checked here before returning).
    """
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, proc = build_tiny_llava(**kw)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)

    from transformers import AutoModelForImageTextToText, AutoProcessor

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        proc2 = AutoProcessor.from_pretrained(folder)
        model2 = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    case1 = build_case(model, proc)
    case2 = build_case(model2, proc2)
    if not torch.equal(case1["inputs"]["input_ids"], case2["inputs"]["input_ids"]):
        raise RuntimeError("reloaded processor gives different input_ids")
    if not torch.equal(case1["inputs"]["pixel_values"], case2["inputs"]["pixel_values"]):
        raise RuntimeError("reloaded processor gives different pixel_values")
    with torch.no_grad():
        l1 = model(**case1["inputs"]).logits
        l2 = model2(**case2["inputs"]).logits
    if not torch.equal(l1, l2):
        raise RuntimeError(f"reloaded model gives different logits (max diff {(l1 - l2).abs().max().item()})")
    return folder


def rand_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Deterministic uint8 noise image of size (w, h) in PIL ``mode`` (RGB, L, RGBA, or anything PIL converts to)."""
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8))
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8))
    img = Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    return img if mode == "RGB" else img.convert(mode)


def _find_subsequence(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i:i + len(sub)] == sub:
            return i
    raise ValueError("subsequence not found")


def build_case(model, processor, *, question: str = "What color is the object?",
               answer: str = " a red circle on the left", n_answer: int | None = 4, image=None,
               system: str | None = None) -> dict:
    """A teacher-forced single-sequence input for explanation tests.

    The prompt comes from the processor's chat template (one image + ``question``, generation prompt); the
    answer tokens (``answer`` tokenised without specials, optionally truncated to ``n_answer`` tokens) are
    appended. Returns a dict with ``inputs`` (input_ids [1, N], attention_mask, pixel_values), ``prompt_len``,
    ``answer_ids`` (list), ``answer_positions`` (sequence indices of the answer tokens), ``image_positions``
    (where input_ids == image token id) and ``prompt_positions`` (the question's tokens only).
    """
    import torch

    tok = processor.tokenizer
    if image is None:
        image = rand_image(64, 48, seed=0)
    msgs = []
    if system is not None:
        msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
    msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]})
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    enc = processor(images=image, text=prompt, return_tensors="pt")
    answer_ids = tok.encode(answer, add_special_tokens=False)
    if n_answer is not None:
        answer_ids = answer_ids[:n_answer]
    prompt_ids = enc["input_ids"][0].tolist()
    P0 = len(prompt_ids)
    ids = torch.tensor([prompt_ids + answer_ids], dtype=torch.long)
    inputs = dict(enc)
    inputs["input_ids"] = ids
    inputs["attention_mask"] = torch.ones_like(ids)
    q_ids = tok.encode(question, add_special_tokens=False)
    q0 = _find_subsequence(prompt_ids, q_ids)
    return {
        "inputs": inputs,
        "prompt_len": P0,
        "answer_ids": answer_ids,
        "answer_positions": list(range(P0, P0 + len(answer_ids))),
        "image_positions": [i for i, t in enumerate(prompt_ids) if t == tok.image_token_id],
        "prompt_positions": list(range(q0, q0 + len(q_ids))),
    }
