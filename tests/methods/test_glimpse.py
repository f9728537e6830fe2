"""GLIMPSE's maths: weights sum to one, fallbacks, option checks, registry."""

import copy

import numpy as np
import pytest
import torch

import glimpse
from glimpse.methods import get_method, list_methods
from glimpse.methods.glimpse import WEIGHTINGS, Glimpse, depth_prior, fuse_heads, layer_weights, token_weights
from tiny_models import rand_image

QUESTION = "what color is the object?"


@pytest.mark.parametrize("mode", WEIGHTINGS)
def test_betas_sum_to_one(tiny_llava, mode):
    model, processor = tiny_llava
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle",
                             token_weighting=mode)
    details = result.details
    for beta in (result.token_weights, details["beta_prompt"]):
        assert beta.min() >= 0 and np.isclose(beta.sum(), 1, atol=1e-6)
    np.testing.assert_allclose(details["gamma"], result.token_weights * details["beta_prompt"], rtol=1e-6)
    np.testing.assert_allclose(details["alpha"].sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(details["head_weights"].sum(2), 1, atol=1e-6)
    np.testing.assert_array_equal(result.ranking, details["gamma"])
    assert result.notes == []


def test_zero_gradients_fall_back_to_prior_and_uniform(tiny_llava):
    """With every attention output projection zeroed, no logit depends on any attention."""
    model, processor = tiny_llava
    dead = copy.deepcopy(model)
    for layer in dead.model.language_model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
    with pytest.warns(glimpse.FallbackWarning) as caught:
        result = glimpse.explain(dead, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    prior = depth_prior(result.layers, 0.2).numpy()
    np.testing.assert_allclose(result.details["alpha"], np.tile(prior, (3, 1)), rtol=1e-6)
    np.testing.assert_allclose(result.token_weights, 1 / 3, rtol=1e-6)
    # Each fallback is a note and a warning: the prior for all three tokens, uniform weights for both maps.
    assert len(result.notes) == 3 and [str(w.message) for w in caught] == result.notes
    assert "[0, 1, 2]" in result.notes[0] and "depth prior" in result.notes[0]
    assert "visual map" in result.notes[1] and "prompt map" in result.notes[2]
    assert np.all(np.isfinite(result.visual)) and np.all(result.visual == 0)


def test_fuse_heads_rows_sum_to_one_or_zero():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(3, 5, 5).masked_fill(torch.ones(5, 5).triu(1).bool(), -1e9), -1)
    grad = torch.randn(3, 5, 5)
    grad[:, 2] = -1.0  # row 2 has no positive gradient anywhere
    out = fuse_heads(attn, grad, 0.5)
    sums = out["fused"].sum(1)
    assert torch.allclose(sums[[0, 1, 3, 4]], torch.ones(4)) and sums[2] == 0
    assert torch.isclose(out["head_weights"].sum(), torch.tensor(1.0))


def test_layer_and_token_weight_fallbacks():
    prior = depth_prior([0, 1, 2], 0.2)
    assert torch.equal(layer_weights(torch.zeros(3), prior), prior)
    zeros = torch.zeros(4)
    (beta_v, v_uniform), (beta_p, p_uniform) = token_weights(torch.rand(4), zeros, zeros, "full")
    assert torch.allclose(beta_v, torch.full((4,), 0.25)) and torch.allclose(beta_p, torch.full((4,), 0.25))
    assert v_uniform and p_uniform
    (_, v_uniform), (_, p_uniform) = token_weights(torch.rand(4) + 0.1, torch.ones(4), zeros, "full")
    assert not v_uniform and p_uniform


@pytest.mark.parametrize("options", [{"head_lambda": 0}, {"layer_fraction": 0}, {"layer_fraction": 1.5},
                                     {"token_weighting": "bogus"}, {"unknown_option": 1}])
def test_bad_options(options):
    with pytest.raises(glimpse.MethodError):
        get_method("glimpse", **options)


def test_registry_lists_glimpse_first_with_paper():
    methods = list_methods()
    assert "glimpse" in methods and "2506.18985" in methods["glimpse"].paper
    with pytest.raises(glimpse.MethodError, match="available: glimpse"):
        get_method("nope")


def test_each_token_is_reduced_right_after_its_backward_pass(tiny_llava, monkeypatch):
    """Only one answer token's fused matrices are alive at a time; the maths is unchanged (the
    float64 reference tests hold the values)."""
    from glimpse.capture import Capture

    model, processor = tiny_llava
    alive, traces = [], []
    original_finish, original_run = Glimpse.finish_token, Capture.run

    def finish(self, token, layers, n_layers, cross):
        original_finish(self, token, layers, n_layers, cross)
        alive.append(sum(bool(t.layers) for t in traces[-1]))

    def run(self, inputs, layout, gradients="per_token", on_token=None, token_batch=1):
        def watched(token, layers):
            traces.append([token] if not traces else traces[-1] + [token])
            on_token(token, layers)
        return original_run(self, inputs, layout, gradients, watched, token_batch)

    monkeypatch.setattr(Glimpse, "finish_token", finish)
    monkeypatch.setattr(Capture, "run", run)
    for options in ({"path": "full_matrix"}, {"path": "blockwise"}, {"path": "blockwise", "max_memory": 1.0}):
        alive.clear(), traces.clear()
        result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle", **options)
        assert alive == [0, 0, 0] and len(result.answer_tokens) == 3
        assert all(not token.layers and set(token.summary) >= {"row", "alpha"} for token in traces[-1])


def test_capture_computes_only_the_logits_it_reads(tiny_llava):
    model, processor = tiny_llava
    shapes = []
    hook = model.lm_head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    try:
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    finally:
        hook.remove()
    assert shapes == [(1, 4, model.config.text_config.vocab_size)]  # 3 answer tokens' query rows + the last


def test_path_option_and_the_auto_rule(tiny_llava):
    import types

    from glimpse.methods import glimpse as module

    with pytest.raises(glimpse.OptionError, match="path must be one of"):
        Glimpse(path="fastest")
    model = tiny_llava[0]
    assert not Glimpse().blockwise(model, module.BLOCKWISE_FROM - 1)
    assert Glimpse().blockwise(model, module.BLOCKWISE_FROM)
    assert Glimpse(path="blockwise").blockwise(model, 10) and not Glimpse(path="full_matrix").blockwise(model, 10**6)
    capped = types.SimpleNamespace(config=types.SimpleNamespace(text_config=types.SimpleNamespace(
        attn_logit_softcapping=50.0)))
    assert not Glimpse().blockwise(capped, 10**6), "sdpa cannot cap logits: auto keeps explicit matrices"
