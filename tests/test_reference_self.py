"""Tests of the float64 GLIMPSE reference (tests/reference.py) and of the tiny models it runs on."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import reference as ref
import tiny_models as tm

MODES = ref.MODES


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def case(tiny_llava):
    model, proc = tiny_llava
    return tm.build_case(model, proc)   # prompt from the chat template (1 image + question) + 4 answer tokens


def _run(model, c, **kw):
    return ref.reference_glimpse(model, c["inputs"], c["answer_positions"], c["image_positions"],
                                 c["prompt_positions"], **kw)


@pytest.fixture(scope="module")
def results(tiny_llava, case):
    model, _ = tiny_llava
    return {mode: _run(model, case, mode=mode) for mode in MODES}


@pytest.fixture(scope="module")
def tiny_llava_4layers():
    return tm.build_tiny_llava(seed=3, layers=4)


# ----------------------------------------------------------------------------------------------- tiny models

def test_tokenizer_and_template(tiny_llava):
    _, proc = tiny_llava
    tok = proc.tokenizer
    assert 300 <= len(tok) <= 400
    assert tok.image_token == "<image>" and tok.image_token_id == tok.convert_tokens_to_ids("<image>")
    ids = tok("describe the image.")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "describe the image."
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the object?"}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    assert text == "Be brief. USER: <image>\nWhat color is the object? ASSISTANT:"
    text = proc.apply_chat_template(msgs[1:], add_generation_prompt=False)
    assert text == "USER: <image>\nWhat color is the object? "


def test_case_layout(tiny_llava, case):
    _, proc = tiny_llava
    ids = case["inputs"]["input_ids"][0].tolist()
    N = len(ids)
    assert ids[0] == proc.tokenizer.bos_token_id
    assert len(case["image_positions"]) == 16                       # (56/14)^2, CLS dropped
    assert case["image_positions"] == list(range(case["image_positions"][0], case["image_positions"][0] + 16))
    assert proc.tokenizer.decode([ids[i] for i in case["prompt_positions"]]) == "What color is the object?"
    assert 3 <= len(case["answer_positions"]) <= 5 and case["answer_positions"][-1] == N - 1
    assert case["answer_positions"][0] == case["prompt_len"]
    assert case["inputs"]["pixel_values"].shape == (1, 3, 56, 56)


def test_tiny_model_not_degenerate(tiny_llava, case):
    """Attention rows are clearly non-uniform, logits vary, and the logit depends on the pixels."""
    model, _ = tiny_llava
    pv = case["inputs"]["pixel_values"].clone().requires_grad_(True)
    out = model(**dict(case["inputs"], pixel_values=pv), output_attentions=True, use_cache=False)
    assert len(out.attentions) == 2
    assert model.config.text_config.num_attention_heads == 4
    for A in out.attentions:
        A = A[0].detach()
        N = A.shape[-1]
        ent = -(A.clamp_min(1e-30).log() * A).sum(-1)[:, 1:]
        uniform = torch.log(torch.arange(2, N + 1, dtype=torch.float32))
        assert (ent / uniform).mean() < 0.95                            # default init gives ~0.99997
    assert out.logits.std() > 0.5                                      # default init gives ~0.11
    pos = case["answer_positions"][0]
    (g,) = torch.autograd.grad(out.logits[0, pos - 1, case["inputs"]["input_ids"][0, pos]], pv)
    assert g.abs().sum() > 0                                            # (autograd.grad: no .grad on the shared model)


def test_build_is_deterministic():
    m1, _ = tm.build_tiny_llava(seed=0)
    m2, _ = tm.build_tiny_llava(seed=0)
    m3, _ = tm.build_tiny_llava(seed=1)
    s1, s2, s3 = m1.state_dict(), m2.state_dict(), m3.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not torch.equal(s1["model.language_model.layers.0.self_attn.q_proj.weight"],
                           s3["model.language_model.layers.0.self_attn.q_proj.weight"])
    assert m1.dtype == torch.float32 and not m1.training
    assert m1.config._attn_implementation == "eager"
    assert tm.rand_image(20, 10, seed=5).tobytes() == tm.rand_image(20, 10, seed=5).tobytes()
    assert tm.rand_image(20, 10, seed=5, mode="L").size == (20, 10)


def test_saved_model_reloads_offline(tiny_llava, tiny_llava_dir, case):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc2 = AutoProcessor.from_pretrained(tiny_llava_dir)
    model2 = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, attn_implementation="eager").eval()
    c2 = tm.build_case(model2, proc2)
    assert torch.equal(c2["inputs"]["input_ids"], case["inputs"]["input_ids"])
    assert torch.equal(c2["inputs"]["pixel_values"], case["inputs"]["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model2(**c2["inputs"]).logits, tiny_llava[0](**case["inputs"]).logits)


def test_pad_processor_pads_with_mean_colour():
    """crop=False: LlavaImageProcessorPil(do_pad=True) pads to square with the CLIP mean colour, then resizes."""
    proc = tm.make_processor(crop=False)
    pv = proc.image_processor(tm.rand_image(64, 32, seed=1), return_tensors="pt")["pixel_values"]
    assert pv.shape == (1, 3, 56, 56)
    # rows 0..13 of 56 are padding (16 of 64 before the resize); background = int(mean*255), ~0 after normalising
    assert pv[0, :, :10, :].abs().max() < 0.02
    assert pv[0, :, 20:36, :].abs().mean() > 0.5


# ----------------------------------------------------------------------------------------------- reference

@pytest.mark.parametrize("mode", MODES)
def test_token_weights_sum_to_one(results, mode):
    r = results[mode]
    T = len(r["probs"])
    for key in ("beta_visual", "beta_prompt"):
        assert r[key].dtype == torch.float64 and r[key].shape == (T,)
        assert torch.all(r[key] >= 0)
        assert r[key].sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.allclose(r["gamma"], r["beta_visual"] * r["beta_prompt"], rtol=0, atol=0)


def test_mode_definitions(results):
    full = results["full"]
    p, a, v = full["probs"], full["prompt_alignment"], full["visual_alignment"]
    T = len(p)
    assert torch.allclose(full["beta_visual"], p * a / (p * a).sum())      # crossed: a weights the visual map
    assert torch.allclose(full["beta_prompt"], p * v / (p * v).sum())
    assert torch.allclose(results["confidence"]["beta_visual"], p / p.sum())
    assert torch.allclose(results["confidence"]["beta_prompt"], p / p.sum())
    assert torch.allclose(results["prompt"]["beta_visual"], a / a.sum())
    assert torch.allclose(results["prompt"]["beta_prompt"], v / v.sum())
    assert torch.equal(results["uniform"]["beta_visual"], torch.full((T,), 1.0 / T, dtype=torch.float64))
    for mode in MODES:   # the per-token maps do not depend on the mode; the holistic maps are the beta mixtures
        r = results[mode]
        assert torch.equal(r["token_visual"], full["token_visual"])
        assert torch.allclose(r["visual"], (r["beta_visual"][:, None] * r["token_visual"]).sum(0))
        assert torch.allclose(r["prompt"], (r["beta_prompt"][:, None] * r["token_prompt"]).sum(0))
    # a and v are the means of the propagated rows over P and V
    assert torch.allclose(a, full["token_prompt"].mean(1)) and torch.allclose(v, full["token_visual"].mean(1))


def test_zero_normaliser_gives_uniform():
    T = 3
    probs = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    zero = torch.zeros(T, dtype=torch.float64)
    for mode in ("full", "prompt"):
        bv, bp = ref.token_weights(probs, zero, zero, mode)
        assert torch.equal(bv, torch.full((T,), 1 / T, dtype=torch.float64)) and torch.equal(bp, bv)
    with pytest.raises(ValueError):
        ref.token_weights(probs, zero, zero, "nope")


def test_shapes_and_non_degenerate(results, case, tiny_llava):
    r = results["full"]
    T, nV, nP = len(case["answer_positions"]), len(case["image_positions"]), len(case["prompt_positions"])
    H = tiny_llava[0].config.text_config.num_attention_heads
    shapes = {"token_visual": (T, nV), "token_prompt": (T, nP), "alpha": (T, 2), "head_weights": (T, 2, H),
              "beta_visual": (T,), "beta_prompt": (T,), "gamma": (T,), "probs": (T,), "visual": (nV,),
              "prompt": (nP,)}
    for k, s in shapes.items():
        assert r[k].shape == s, k
        assert r[k].dtype == torch.float64, k
        assert torch.isfinite(r[k]).all(), k
    assert r["layers"].tolist() == [0, 1]
    # numerically non-degenerate: maps vary across tokens, betas are not uniform, alpha is not just the prior
    assert (r["token_visual"] > 0).all()
    assert r["visual"].std() / r["visual"].mean() > 0.1
    assert r["prompt"].std() / r["prompt"].mean() > 0.1
    assert (r["beta_visual"].max() - r["beta_visual"].min()) > 0.05
    prior = ref.depth_prior([0, 1])
    assert (r["alpha"] - prior).abs().max() > 0.05
    assert (r["head_weights"].std(-1) > 0).all()
    # probs are the softmax probabilities of the teacher-forced tokens
    model, _ = tiny_llava
    with torch.no_grad():
        logits = model(**case["inputs"]).logits[0].double()
    ids = case["inputs"]["input_ids"][0]
    expect = torch.stack([torch.softmax(logits[p - 1], -1)[ids[p]] for p in case["answer_positions"]])
    assert torch.allclose(r["probs"], expect, rtol=1e-5)


def test_alpha_sums_to_one_and_head_weights(results):
    r = results["full"]
    assert torch.allclose(r["alpha"].sum(-1), torch.ones(len(r["probs"]), dtype=torch.float64), atol=1e-14)
    assert torch.allclose(r["head_weights"].sum(-1), torch.ones(r["head_weights"].shape[:2], dtype=torch.float64))


def test_depth_prior_and_layer_weights_helpers():
    s = ref.depth_prior([0, 1, 2, 3], depth_lambda=0.2)
    assert s.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert torch.allclose(s[1:] / s[:-1], torch.full((3,), math.exp(0.2), dtype=torch.float64))
    # only the used layers, absolute indices: same ratios, renormalised
    s2 = ref.depth_prior([2, 3], depth_lambda=0.2)
    assert torch.allclose(s2, s[2:] / s[2:].sum())
    # all gradients zero -> alpha = prior
    assert torch.equal(ref.layer_weights(torch.zeros(4, dtype=torch.float64), s), s)
    ev = torch.tensor([1.0, 0.0, 2.0, 3.0], dtype=torch.float64)
    alpha = ref.layer_weights(ev, s)
    assert torch.allclose(alpha, ev * s / (ev * s).sum()) and alpha.sum().item() == pytest.approx(1.0)
    assert ref.used_layers(4, 1.0) == [0, 1, 2, 3]
    assert ref.used_layers(4, 0.5) == [2, 3]
    assert ref.used_layers(4, 0.6) == [1, 2, 3]
    assert ref.used_layers(4, 0.01) == [3] and ref.used_layers(4, 0.0) == [3]


def test_zero_gradients_end_to_end_give_prior_and_uniform(tiny_llava, case):
    """o_proj = 0 in every LM layer: the attention no longer reaches the logits, so dz/dA = 0 exactly.
    Then alpha = depth prior, head weights are uniform, E = 0, R = I, the maps are 0 and betas fall back to 1/T."""
    model = copy.deepcopy(tiny_llava[0])
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
    r = _run(model, case)
    T = len(case["answer_positions"])
    prior = ref.depth_prior([0, 1])
    assert torch.equal(r["alpha"], prior.expand(T, 2))
    assert torch.equal(r["head_weights"], torch.full_like(r["head_weights"], 0.25))
    assert torch.all(r["token_visual"] == 0) and torch.all(r["token_prompt"] == 0)
    assert torch.equal(r["beta_visual"], torch.full((T,), 1.0 / T, dtype=torch.float64))


def test_head_fusion_helper():
    torch.manual_seed(0)
    H, N = 3, 6
    A = torch.softmax(torch.randn(H, N, N, dtype=torch.float64).masked_fill(
        torch.triu(torch.ones(N, N, dtype=torch.bool), 1), float("-inf")), -1)
    g = torch.randn(H, N, N, dtype=torch.float64)
    g[:, 4:] = 0                                                 # rows with no gradient stay zero rows
    E, w = ref.head_fusion(A, g, head_lambda=0.5)
    G = torch.relu(g * A)
    scores = G.sum((1, 2)) / torch.relu(g).sum((1, 2))
    assert torch.allclose(w, torch.softmax(scores / 0.5, 0))
    Eraw = (w[:, None, None] * G).sum(0)
    nz = Eraw.sum(1) > 0
    assert torch.allclose(E[nz], Eraw[nz] / Eraw[nz].sum(1, keepdim=True))
    assert torch.all(E[4:] == 0) and torch.allclose(E[nz].sum(1), torch.ones(int(nz.sum()), dtype=torch.float64))


def test_propagate_equals_row_vector_recursion():
    """R = R + (I + a E) R over layers in increasing order == carry r = e_t from the LAST layer to the first."""
    torch.manual_seed(1)
    N, n = 7, 3
    Es = [torch.rand(N, N, dtype=torch.float64).tril() for _ in range(n)]
    Es = [E / E.sum(1, keepdim=True) for E in Es]
    alphas = torch.softmax(torch.randn(n, dtype=torch.float64), 0)
    R = ref.propagate(Es, alphas)
    I = torch.eye(N, dtype=torch.float64)
    prod = I
    for E, a in zip(Es, alphas):
        prod = (2 * I + a * E) @ prod
    assert torch.allclose(R, prod / 2 ** n)
    for t in range(N):
        r = I[t].clone()
        for E, a in zip(reversed(Es), reversed(alphas.tolist())):
            r = 2 * r + a * (r @ E)
        assert torch.allclose(R[t], r / 2 ** n)


def test_own_row_has_zero_gradient_and_zero_map(tiny_llava, case, results):
    """z_t is produced at query row pos_t - 1: dz_t/dA is exactly 0 on every row >= pos_t in every layer, so
    reading the token's own row (pos_t) gives an all-zero image (and prompt) map."""
    model, _ = tiny_llava
    m64 = ref.float64_copy(model)
    inputs64 = ref.to_float64_inputs(case["inputs"])
    out, attns = ref.forward_with_attentions(m64, inputs64)
    ids = inputs64["input_ids"][0]
    for pos in case["answer_positions"]:
        grads = ref.attention_grads(out.logits[0, pos - 1, ids[pos]], attns)
        for g in grads:
            assert torch.all(g[:, pos:, :] == 0)
        assert grads[-1][:, pos - 1, :].abs().sum() > 0         # the producing row does carry gradient
        assert all(g[:, :pos, :].abs().sum() > 0 for g in grads)
    own = _run(model, case, query_offset=0)
    assert torch.all(own["token_visual"] == 0) and torch.all(own["visual"] == 0)
    assert torch.all(own["token_prompt"] == 0)
    assert (results["full"]["token_visual"].sum(1) > 0).all()   # the method's row (pos_t - 1) is not zero


def test_layer_fraction_selects_last_layers(tiny_llava_4layers):
    model, proc = tiny_llava_4layers
    c = tm.build_case(model, proc, n_answer=3)
    full = _run(model, c, layer_fraction=1.0)
    half = _run(model, c, layer_fraction=0.5)
    last = _run(model, c, layer_fraction=0.1)
    assert full["layers"].tolist() == [0, 1, 2, 3]
    assert half["layers"].tolist() == [2, 3]
    assert last["layers"].tolist() == [3]
    assert half["alpha"].shape == (3, 2) and half["head_weights"].shape == (3, 2, 4)
    # head weights are per layer, independent of which layers are used
    assert torch.allclose(half["head_weights"], full["head_weights"][:, 2:])
    assert torch.allclose(last["head_weights"], full["head_weights"][:, 3:])
    # alpha ∝ g^l s^l: the ratio between two used layers does not depend on the other layers
    assert torch.allclose(half["alpha"][:, 1] / half["alpha"][:, 0], full["alpha"][:, 3] / full["alpha"][:, 2])
    assert torch.equal(last["alpha"], torch.ones(3, 1, dtype=torch.float64))
    for r in (half, last):
        assert torch.allclose(r["beta_visual"].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert not torch.allclose(half["visual"], full["visual"])


def test_reference_is_deterministic_and_leaves_model_alone(tiny_llava, case, results):
    model, _ = tiny_llava
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = _run(model, case)
    for k, v in results["full"].items():
        assert torch.equal(v, again[k]), k
    assert model.dtype == torch.float32 and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
