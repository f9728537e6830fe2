"""The Mllama adapter and GLIMPSE through cross-attention, on a tiny random Mllama (tests/tiny_families_mllama.py).

Mllama's image never enters the text sequence: its vision tokens are the KEYS of the cross-attention layers.
So the geometry ground truth is taken where the language model sees them (each key as the attention uses it,
after `k_norm`), and the float64 reference below implements docs/method-notes.md's extension directly: GLIMPSE's
propagation R <- R + (I + alpha^l E_l) R on full matrices over sequence positions + vision keys.
"""

import numpy as np
import pytest
import torch
from family_checks import QUESTION, prepare

import glimpse
import reference as ref
from glimpse.capture import Capture
from glimpse.errors import MethodError
from glimpse.layout import SEQUENCE, VISION_KEYS, ImageLayout
from glimpse.methods.base import sink_positions
from reference import assert_match, named_like_reference
from tiny_families_mllama import CROSS_LAYERS, build
from tiny_models import rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched


@pytest.fixture(scope="module")
def tiny_mllama():
    return build(seed=1)


# --- geometry: vision key -> pixels ------------------------------------------------------------------------

# --- sequence layout ------------------------------------------------------------------------------------

def test_question_span_and_image_anchor(tiny_mllama):
    """The image's anchor is its <|image|> token, right before the question, whose cross-attention mask row is
    the first that sees the image. (The question itself: test_adapter_contract.py.)"""
    model, processor = tiny_mllama
    system = f"You are a careful assistant. {QUESTION} is not the question here."
    _, inputs, layout = prepare(model, processor, [rand_image(64, 48)], system=system)
    ids = inputs["input_ids"][0].tolist()
    (anchor,) = layout.image_anchors
    assert ids[anchor] == processor.image_token_id and anchor == layout.prompt[0] - 1
    assert layout.image_sequence_positions == [anchor] and sink_positions(layout) == list(range(anchor))
    seen = inputs["cross_attention_mask"][0, :, 0].any(-1)
    assert not seen[:anchor].any() and seen[anchor:].all()  # answer rows included: the mask was extended
    assert len(layout.image_positions) == 4 * 16  # 2x2 tiles of 4x4 patches


def test_layout_axis_saves_only_when_not_sequence():
    tile = {"rows": 1, "cols": 1, "box": [0, 0, 1, 1], "positions": [3]}
    assert "positions_axis" not in ImageLayout.from_dict({"width": 1, "height": 1, "tiles": [tile]}).to_dict()
    keys = ImageLayout.from_dict({"width": 1, "height": 1, "tiles": [tile], "positions_axis": VISION_KEYS})
    assert keys.positions_axis == VISION_KEYS and keys.to_dict()["positions_axis"] == VISION_KEYS
    assert ImageLayout.from_dict({"width": 1, "height": 1, "tiles": [tile]}).positions_axis == SEQUENCE


# --- explanations ------------------------------------------------------------------------------------------

def test_saved_explanation_keeps_the_key_axis(tiny_mllama, tmp_path):
    result = glimpse.explain(*tiny_mllama, rand_image(64, 40), QUESTION, answer=" a red circle")
    result.save(tmp_path / "e", figures=True)
    loaded = glimpse.Explanation.load(tmp_path / "e")
    assert loaded.layouts == result.layouts and loaded.layouts[0].positions_axis == VISION_KEYS
    assert np.array_equal(loaded.visual_map(), result.visual_map())


def test_capture_records_cross_attention_as_the_model_computes_it(tiny_mllama):
    """Cross-attention layers are reported apart, unmasked by causality, with the model's own mask: the
    captured probabilities equal eager attention's, fully masked text rows (uniform over all keys) included."""
    model, processor = tiny_mllama
    adapter, inputs, layout = prepare(model, processor, [rand_image(30, 90)])
    with torch.no_grad():
        eager = model(**inputs, output_attentions=True, use_cache=False).attentions
    kept = {}
    with Capture(model, adapter.text_config_key, lambda a, g, q: {}, cross_layers=adapter.cross_attention_layers(),
                 reduce_cross=lambda a, g, q: {}) as capture:
        trace = capture.run(inputs, layout, gradients="none")
        kept.update({l: a.detach() for l, a in capture.recorder.attn.items()})
    assert trace.layers == [0, 1, 2, 3, 4] and trace.cross_layers == CROSS_LAYERS
    for layer, attention in enumerate(eager):
        assert kept[layer].shape == attention.shape
        assert torch.allclose(kept[layer], attention, atol=1e-6)
    cross = kept[CROSS_LAYERS[0]][0]
    assert cross.shape[-1] == 4 * 17 and cross.shape[-1] != cross.shape[-2]
    unused = torch.tensor([k for k in range(4 * 17) if k // 17 >= 3])  # a 1x3 canvas leaves tile 3 empty
    assert (cross[:, layout.image_anchors[0]:, unused] == 0).all()


@pytest.mark.parametrize("method", ["raw_attention", "rollout", "gradcam_attn", "gae", "tam"])
def test_methods_that_read_sequence_rows_refuse_cross_attention_images(tiny_mllama, method):
    with pytest.raises(MethodError, match="cross-attention"):
        glimpse.explain(*tiny_mllama, rand_image(64, 40), QUESTION, answer=" a red", method=method)


@pytest.mark.parametrize("method,options", [("input_gradient", {}), ("integrated_gradients", {"steps": 2}),
                                            ("occlusion", {"window": 2, "stride": 2})])
def test_pixel_methods_explain_through_vision_key_patches(tiny_mllama, method, options):
    result = glimpse.explain(*tiny_mllama, [rand_image(64, 40), rand_image(30, 90, seed=1)], QUESTION,
                             answer=" a red", method=method, **options)
    assert result.token_visual.shape == (2, 64 + 48) and np.abs(result.visual).max() > 0


def test_glimpse_fast_equals_glimpse_for_one_answer_token(tiny_mllama):
    exact, fast = (glimpse.explain(*tiny_mllama, rand_image(64, 40), QUESTION, answer=" red", method=name)
                   for name in ("glimpse", "glimpse_fast"))
    assert len(exact.answer_token_ids) == 1 and exact.visual.max() > 0
    assert np.allclose(fast.visual, exact.visual, rtol=1e-5, atol=1e-9)


def test_without_cross_attention_layers_the_image_gets_nothing(tiny_mllama):
    """layer_fraction 0.2 keeps only the last (self-attention) layer: no path reaches the vision keys."""
    with pytest.warns(glimpse.FallbackWarning):  # no gradient reaches the image: said so
        result = glimpse.explain(*tiny_mllama, rand_image(64, 40), QUESTION, answer=" a red", layer_fraction=0.2)
    assert result.layers == [4] and not result.visual.any() and result.prompt.any()


# --- against a float64 reference of the cross-attention extension -----------------------------------------

def reference_cross_glimpse(model, inputs, Y, V, P, *, layer_fraction=1.0, head_lambda=0.5, depth_lambda=0.2):
    """docs/method-notes.md, written out on full matrices: Steps 1-2 per layer (self: N x N, cross: N x K), then
    R = I_{N+K}; R <- R + (I + alpha^l M_l) R for l = first..last with M_l = [[E_l, 0], [0, 0]] for a
    self-attention layer and [[0, E^x_l], [0, 0]] for a cross-attention layer; r_t = 2^-n R[y_t - 1];
    V read at N + k (vision keys), P at the question positions; Steps 4-5 unchanged."""
    m64 = ref.float64_copy(model)
    out = m64(**ref.to_float64_inputs(inputs), output_attentions=True, use_cache=False)
    attns = list(out.attentions)
    N = inputs["input_ids"].shape[1]
    K = attns[CROSS_LAYERS[0]].shape[-1]
    assert len(attns) == ref.num_lm_layers(m64)
    for l, A in enumerate(attns):
        assert A.dtype == torch.float64 and A.requires_grad
        if l in CROSS_LAYERS:
            assert A.shape[-2:] == (N, K)
        else:
            assert A.shape[-2:] == (N, N) and torch.all(torch.triu(A[0], diagonal=1) == 0)
        A.retain_grad()
    logits = out.logits[0]
    layers = ref.used_layers(len(attns), layer_fraction)
    prior = ref.depth_prior(layers, depth_lambda)
    I = torch.eye(N + K, dtype=torch.float64)
    token_visual, token_prompt, alphas = [], [], []
    probs, a, v = (torch.zeros(len(Y), dtype=torch.float64) for _ in range(3))
    for t, pos in enumerate(Y):
        y = int(inputs["input_ids"][0, pos])
        grads = ref.attention_grads(logits[pos - 1, y], attns)
        probs[t] = torch.softmax(logits[pos - 1].detach(), -1)[y]
        matrices, evidence = [], torch.zeros(len(layers), dtype=torch.float64)
        for i, l in enumerate(layers):
            E, _ = ref.head_fusion(attns[l][0].detach(), grads[l], head_lambda)
            M = torch.zeros(N + K, N + K, dtype=torch.float64)
            if l in CROSS_LAYERS:
                M[:N, N:] = E
            else:
                M[:N, :N] = E
            matrices.append(M)
            evidence[i] = ref.layer_evidence(grads[l])
        alpha = ref.layer_weights(evidence, prior)
        R = I.clone()
        for M, weight in zip(matrices, alpha):
            R = R + (I + weight * M) @ R
        r = R[pos - 1] * 2.0 ** -len(layers)
        token_visual.append(r[[N + k for k in V]])
        token_prompt.append(r[P])
        a[t], v[t] = r[P].mean(), r[[N + k for k in V]].mean()
        alphas.append(alpha)
    token_visual, token_prompt = torch.stack(token_visual), torch.stack(token_prompt)
    beta_visual, beta_prompt = ref.token_weights(probs, a, v, "full")
    return {"token_visual": token_visual, "token_prompt": token_prompt, "visual": beta_visual @ token_visual,
            "prompt": beta_prompt @ token_prompt, "beta_visual": beta_visual, "beta_prompt": beta_prompt,
            "gamma": beta_visual * beta_prompt, "probs": probs, "alpha": torch.stack(alphas), "layers": layers}


def reference_case(model, processor, image, question, answer_ids):
    """Inputs rebuilt from the processor with the answer appended (the cross-attention mask grown as generate()
    grows it), and Y, V, P found without the library: V = every used tile's 4 x 4 patch keys, CLS skipped."""
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True)
    enc = dict(processor(images=[image], text=text, return_tensors="pt"))
    prompt_ids = enc["input_ids"][0].tolist()
    ids = torch.tensor([prompt_ids + list(answer_ids)])
    cam = enc["cross_attention_mask"]
    inputs = dict(enc, input_ids=ids, attention_mask=torch.ones_like(ids),
                  cross_attention_mask=torch.cat([cam, cam[:, -1:].repeat(1, len(answer_ids), 1, 1)], 1))
    per_tile = model.model.vision_model.num_patches  # 1 CLS + 16 patches
    used = int(enc["aspect_ratio_mask"][0, 0].sum())
    V = [tile * per_tile + 1 + p for tile in range(used) for p in range(per_tile - 1)]
    q_ids = processor.tokenizer.encode(question, add_special_tokens=False)
    start = next(s for s in range(len(prompt_ids) - len(q_ids), -1, -1) if prompt_ids[s:s + len(q_ids)] == q_ids)
    return inputs, list(range(len(prompt_ids), ids.shape[1])), V, list(range(start, start + len(q_ids)))


@pytest.mark.parametrize("seed,size,answer,options", [
    (0, (64, 40), " a red circle", {}),
    (1, (30, 90), " the image shows a blue square", {}),
    (2, (100, 100), " no", {}),
    (3, (150, 60), " a red circle on the left", {"layer_fraction": 0.6}),
])
def test_matches_float64_reference(seed, size, answer, options):
    model, processor = build(seed=seed)
    image = rand_image(*size, seed=seed)
    explanation = glimpse.explain(model, processor, image, QUESTION, answer=answer, **options)
    inputs, Y, V, P = reference_case(model, processor, image, QUESTION, explanation.answer_token_ids)
    expected = reference_cross_glimpse(model, inputs, Y, V, P, **options)
    for name in ("token_visual", "token_prompt", "visual", "prompt", "beta_visual", "beta_prompt", "gamma", "probs",
                 "alpha"):
        assert_match(named_like_reference(explanation)[name], expected[name], name)
    assert explanation.layers == expected["layers"]
    assert explanation.visual.max() > 0 and np.isfinite(explanation.visual).all()
