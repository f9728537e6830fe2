"""Exact GLIMPSE's cost relative to the work it cannot avoid: one forward plus one backward per
answer token, measured in the same run on the same model.

A random "small" LLaVA with LLaVA-1.5's geometry (336 px, 576 image tokens; CLIP 6 x 256,
Llama 8 x 512) stands in for a real model (no weights are downloaded).

    python benchmarks/speed.py [--answer-tokens 16] [--repeats 3] [--device cpu]

Prints the median seconds of each and the ratio explain / (forward + T backwards), for two floors:
the model's own attention (sdpa, what a user's model runs) and eager attention (explicit
probabilities, what exact GLIMPSE computes today).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessorPil,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

import glimpse

QUESTION = "what is in the picture?"


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
                                num_key_value_heads=8, vocab_size=len(tok)),
        image_token_index=tok.image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(device, dtype).eval().requires_grad_(False)
    return model, processor


def forward_and_backwards(model, processor, image, answer_ids, device, attention: str):
    """The floor: one forward with `attention` kept for autograd, one backward per answer token."""
    adapter = glimpse.adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, 1)
    inputs = {k: v.to(device) for k, v in adapter.with_answer(adapter.encode([image], text), answer_ids).items()}
    model.set_attn_implementation(attention)
    kept = {}

    def keep(module, args, output):
        kept["embeds"] = output.requires_grad_(True)

    hook = model.get_input_embeddings().register_forward_hook(keep)
    try:
        logits = model(**inputs, use_cache=False).logits[0]
        start = inputs["input_ids"].shape[1] - len(answer_ids)
        for t, token in enumerate(answer_ids):
            # Gradient down to the language model's input, as far as GLIMPSE needs to go.
            torch.autograd.grad(logits[start + t - 1, token], kept["embeds"], retain_graph=t < len(answer_ids) - 1)
    finally:
        hook.remove()
        model.set_attn_implementation("sdpa")


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model, processor = build(args.device)
    image = Image.new("RGB", (500, 375), (120, 80, 40))
    answer = " ".join((["a", "red", "circle", "on", "the", "left", "of", "blue", "square"] * 8)[: args.answer_tokens])
    answer_ids = glimpse.adapter_for(model, processor).answer_ids("x", answer)
    floors = {attention: timed(lambda a=attention: forward_and_backwards(model, processor, image, answer_ids,
                                                                          args.device, a), args.repeats)
              for attention in ("sdpa", "eager")}
    ours = timed(lambda: glimpse.explain(model, processor, image, QUESTION, answer=answer), args.repeats)
    print(f"device={args.device} answer_tokens={len(answer_ids)} threads={torch.get_num_threads()}")
    for attention, floor in floors.items():
        print(f"forward + {len(answer_ids)} backwards ({attention}): {floor:.2f} s")
    print(f"glimpse.explain (exact):          {ours:.2f} s")
    for attention, floor in floors.items():
        print(f"ratio to the {attention} floor: {ours / floor:.2f}x")


if __name__ == "__main__":
    main()
