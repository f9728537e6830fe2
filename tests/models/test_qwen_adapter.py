"""The Qwen-VL adapter (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) on tiny random models of each architecture."""

import numpy as np
import pytest
import torch
from family_checks import QUESTION, prepare

import glimpse
import reference
from reference import assert_match, named_like_reference, reference_glimpse, reference_inputs
from tiny_families_qwen import build, save_qwen2_vl
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

# Pairs of (width, height): non-square both ways, a small one smart_resize enlarges (min_pixels) and a large
# one it shrinks (max_pixels), a long thin one. Each pair is one two-image prompt.
SIZE_PAIRS = [((120, 60), (50, 90)), ((30, 30), (300, 250)), ((200, 40), (41, 77))]


def test_hybrid_model_uses_its_attention_layers():
    model, processor = build("qwen3_5")
    result = glimpse.explain(model, processor, rand_image(120, 60), QUESTION, answer=" a red circle")
    assert result.layers == [1, 3] and result.details["alpha"].shape == (len(result.answer_token_ids), 2)
    fraction = glimpse.explain(model, processor, rand_image(120, 60), QUESTION, answer=" a red", layer_fraction=0.5)
    assert fraction.layers == [3]


# --- against the float64 reference (tests/reference.py) --------------------------------------------------

@pytest.fixture
def hybrid_reference(monkeypatch):
    """reference.py wants attention from every layer; Qwen3.5 has it only in its full-attention layers.

    Pad the other layers with all-zero attention (and so zero gradient): there E = 0 and g = 0, hence
    alpha = 0 and the step R <- R + (I + 0) R = 2R, which the reference's 2^-n rescale cancels. The
    reference then computes GLIMPSE over the attention layers only, each at its true depth (depth prior
    and layer_fraction count layers as the model does), which is what the library does.
    """
    original = reference.forward_with_attentions

    def padded(m64, inputs64):
        attention = attention_layers(m64)
        with monkeypatch.context() as patch:
            patch.setattr(reference, "num_lm_layers", lambda _: len(attention))
            out, attns = original(m64, inputs64)
        zero = torch.zeros_like(attns[0])
        return out, [attns[attention.index(i)] if i in attention else zero
                     for i in range(m64.config.text_config.num_hidden_layers)]

    monkeypatch.setattr(reference, "forward_with_attentions", padded)


def attention_layers(model) -> list[int]:
    """From the configuration, independently of capture (which reads the attention modules' layer_idx)."""
    return [i for i, kind in enumerate(model.config.text_config.layer_types) if kind == "full_attention"]


def check_against_reference(model, processor, explanation, question, **options):
    """The reference on the inputs test_reference_match rebuilds from the processor, with M-RoPE's
    mm_token_type_ids (one per position) grown by hand over the answer (text type 0)."""
    inputs, Y, V, P = reference_inputs(processor, explanation, question)
    types = inputs["mm_token_type_ids"]
    inputs["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, len(Y))], 1)
    ref = reference_glimpse(model, inputs, Y, V, P, **options)
    for name in ("token_visual", "token_prompt", "visual", "prompt", "beta_visual", "beta_prompt", "gamma", "probs"):
        assert_match(named_like_reference(explanation)[name], ref[name], name)
    return ref


@pytest.mark.parametrize("seed,answer", [(0, " a red circle"), (1, " the image shows a blue square"), (2, " no")])
def test_qwen2_vl_matches_reference(seed, answer):
    model, processor = build("qwen2_vl", seed=seed)
    explanation = glimpse.explain(model, processor, rand_image(120, 60, seed=seed), QUESTION, answer=answer)
    ref = check_against_reference(model, processor, explanation, QUESTION)
    assert_match(explanation.details["alpha"], ref["alpha"], "alpha")
    assert explanation.layers == ref["layers"].tolist()


@pytest.mark.parametrize("options", [{}, {"layer_fraction": 0.5}])
def test_qwen3_5_matches_reference(hybrid_reference, options):
    model, processor = build("qwen3_5", seed=3)
    explanation = glimpse.explain(model, processor, rand_image(90, 64, seed=3), QUESTION,
                                  answer=" a red circle on the left", **options)
    ref = check_against_reference(model, processor, explanation, QUESTION, **options)
    used = ref["layers"].tolist()
    keep = [used.index(l) for l in attention_layers(model) if l in used]
    assert explanation.layers == [used[k] for k in keep]
    assert (ref["alpha"][:, [k for k in range(len(used)) if k not in keep]] == 0).all()
    assert_match(explanation.details["alpha"], ref["alpha"][:, keep], "alpha")


# --- loading a saved model without torchvision ---------------------------------------------------------

@pytest.mark.parametrize("processor_config", [True, False])
def test_load_folder_without_torchvision(tmp_path, processor_config):
    """Saved like a hub repository; without processor_config.json the class comes from the model type."""
    folder = save_qwen2_vl(tmp_path, seed=0)
    if not processor_config:
        (folder / "processor_config.json").unlink()
    from transformers import AutoProcessor

    with pytest.raises(ImportError, match="(?i)torchvision"):  # the path glimpse.load must get around
        AutoProcessor.from_pretrained(folder)
    model, processor = glimpse.load(folder, device="cpu")
    assert type(processor).__name__ == "Qwen2VLProcessor"
    built_model, built = build("qwen2_vl", seed=0)
    image = rand_image(120, 60)
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}
    text = built.apply_chat_template([message], add_generation_prompt=True)
    ours = processor(images=[image], text=text, return_tensors="pt")
    theirs = built(images=[image], text=text, return_tensors="pt")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    loaded = glimpse.explain(model, processor, image, QUESTION, answer=" a red")
    expected = glimpse.explain(built_model, built, image, QUESTION, answer=" a red")
    assert np.allclose(loaded.visual, expected.visual, rtol=1e-4, atol=1e-7)


def test_image_the_processor_refuses_is_an_image_error():
    from PIL import Image

    import glimpse
    from tiny_families_qwen import build

    model, processor = build("qwen2_vl", 0)[:2]
    with pytest.raises(glimpse.ImageError, match="aspect ratio"):
        glimpse.explain(model, processor, Image.new("RGB", (1000, 2)), "what?", answer="x")


def test_integrated_gradients_complete_on_flattened_pixels():
    """Completeness: the image attributions add up to log p(answer | x) - log p(answer | black)."""
    from glimpse.methods.pixels import answer_log_probs

    model, processor = build("qwen2_vl", 0)
    image = rand_image(90, 60, seed=3)
    result = glimpse.explain(model, processor, image, QUESTION, answer=" a red", method="integrated_gradients",
                             steps=64)
    adapter, inputs, layout = prepare(model, processor, [image], answer=" a red")
    with torch.no_grad():
        clean = answer_log_probs(model, inputs, layout).sum()
        black = answer_log_probs(model, dict(inputs, pixel_values=adapter.black_pixels(inputs["pixel_values"])),
                                 layout).sum()
    assert float(result.visual.sum()) == pytest.approx(float(clean - black), rel=0.02, abs=1e-4)
