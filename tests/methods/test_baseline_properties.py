"""Defining properties of the baseline methods, cross-checks against captum, the registry and the CLI.

pytorch-grad-cam (PyPI `grad-cam`) cannot be used as a cross-check here: it imports torchvision, and no
torchvision wheel installs next to this machine's CPU torch 2.13.0. gradcam_attn is therefore tested through
its float64 reference (test_baselines_reference.py) and its defining properties below.
"""

import copy
import json

import numpy as np
import pytest
import reference_baselines as ref
import torch
from captum.attr import InputXGradient, IntegratedGradients
from captum.attr import Occlusion as CaptumOcclusion

import glimpse
from glimpse.methods import AttentionMethod, get_method, list_methods
from glimpse.methods.attention import carry_rows, with_residual
from glimpse.methods.base import sink_positions
from reference import named_like_reference, reference_inputs
from tiny_models import build_tiny_llava, rand_image

QUESTION = "what color is the object?"
ANSWER = " a red circle"
ATTENTION_METHODS = [name for name, cls in list_methods().items() if issubclass(cls, AttentionMethod)]


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_llava(seed=3, layers=3)
    return model, processor, rand_image(64, 48, seed=3)


def prepared(model, processor, image, answer=ANSWER):
    """(adapter, inputs, layout) as explain builds them, for calling a method's run directly."""
    adapter = glimpse.adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, 1)
    ids = adapter.answer_ids(text, answer)
    inputs = adapter.with_answer(adapter.encode([image], text), ids)
    return adapter, inputs, adapter.layout(inputs, [image], text, QUESTION, len(ids))


def pearson(a, b):
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


# --- registry and CLI ----------------------------------------------------------------------------

def test_every_method_is_registered_with_name_summary_paper_and_params():
    methods = list_methods()
    assert list(methods)[0] == "glimpse"
    assert {"glimpse", "glimpse_fast", "raw_attention", "rollout", "gradcam_attn", "agcam", "gae", "tam",
            "input_gradient", "integrated_gradients", "occlusion"} <= set(methods)
    for name, cls in methods.items():
        assert cls.name == name
        assert cls.summary and "\n" not in cls.summary and len(cls.summary) <= 120, name
        assert any(str(year) in cls.paper for year in range(2013, 2027)), name
        assert "arXiv" in cls.paper or "ICCV" in cls.paper, name
        params = get_method(name).params()
        json.dumps(params)
        if issubclass(cls, AttentionMethod):
            assert params["exclude_sinks"] is False
    assert list_methods()["agcam"]().params() == list_methods()["gradcam_attn"]().params()


def test_cli_methods_lists_every_method_with_summary_and_paper():
    from typer.testing import CliRunner

    from glimpse.cli import app

    result = CliRunner().invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    for name, cls in list_methods().items():
        assert name in result.output and cls.summary in result.output and cls.paper in result.output


@pytest.mark.parametrize("name,options", [
    ("raw_attention", {"layer": "last"}), ("gradcam_attn", {"layer": None}), ("tam", {"kernel_size": 2}),
    ("tam", {"kernel_size": 0}), ("integrated_gradients", {"steps": 0}), ("integrated_gradients", {"baseline": "white"}),
    ("occlusion", {"window": 0}), ("occlusion", {"stride": 1.5}), ("occlusion", {"prompt_token": "mask"}),
    ("occlusion", {"batch_size": 0}), ("rollout", {"layer": 1}), ("input_gradient", {"steps": 4}),
])
def test_bad_options(name, options):
    with pytest.raises(glimpse.MethodError):
        get_method(name, **options)


def test_layer_out_of_range_is_a_clear_error(tiny):
    model, processor, image = tiny
    with pytest.raises(glimpse.MethodError, match="out of range"):
        glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="raw_attention", layer=3)


@pytest.mark.parametrize("method", ["rollout", "tam", "occlusion"])
def test_results_round_trip_and_render(tiny, tmp_path, method):
    model, processor, image = tiny
    explanation = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method=method)
    explanation.save(tmp_path / "out")
    loaded = glimpse.Explanation.load(tmp_path / "out")
    assert loaded.method == method and loaded.params == explanation.params
    np.testing.assert_array_equal(loaded.visual, explanation.visual)
    assert explanation.visual_map().shape == (48, 64)
    assert method in explanation.to_html()


# --- sinks -----------------------------------------------------------------------------------------

def test_sink_positions_are_the_template_before_the_first_image(tiny):
    model, processor, image = tiny
    _, _, layout = prepared(model, processor, image)
    first = min(layout.image_positions)
    assert first > 1
    assert sink_positions(layout) == [p for p in range(first) if p not in layout.prompt]
    assert 0 in sink_positions(layout)


@pytest.mark.parametrize("name", ATTENTION_METHODS)
def test_exclude_sinks_zeroes_the_sink_columns_for_every_attention_method(tiny, name):
    model, processor, image = tiny
    adapter, inputs, layout = prepared(model, processor, image)
    sinks = sink_positions(layout)
    outcome = {}
    for flag in (False, True):
        method = get_method(name, exclude_sinks=flag)
        seen = []
        original = method.reduce_layer

        def spy(attn, grad, query, original=original, seen=seen):
            seen.append(float(attn[..., sinks].abs().max()))
            return original(attn, grad, query)

        method.reduce_layer = spy
        outcome[flag] = method.run(model, adapter, inputs, layout)
        assert seen, f"{name} reduced no layer"
        assert (max(seen) == 0) if flag else (min(seen) > 0)
    if name in ("rollout", "glimpse", "glimpse_fast"):
        # These renormalise rows, so the mass taken from the sinks moves to the other keys.
        assert not torch.allclose(outcome[True].token_visual, outcome[False].token_visual)


# --- rollout -----------------------------------------------------------------------------------

@pytest.mark.parametrize("exclude_sinks", [False, True])
def test_rollout_matrix_rows_sum_to_one(tiny, exclude_sinks):
    model, processor, image = tiny
    adapter, inputs, layout = prepared(model, processor, image)
    method = get_method("rollout", exclude_sinks=exclude_sinks)
    traces = []
    combine = method.combine
    method.combine = lambda trace, layout: traces.append(trace) or combine(trace, layout)
    method.run(model, adapter, inputs, layout)
    mixed = [with_residual(a) for a in method.matrices(traces[0])]
    size = mixed[0].shape[0]
    rollout = carry_rows(mixed, list(range(size)), lambda rows, m: rows @ m)  # the full matrix R
    torch.testing.assert_close(rollout.sum(1), torch.ones(size), rtol=0, atol=1e-5)
    assert rollout.min() >= 0 and torch.all(torch.triu(rollout, diagonal=1) == 0)
    for a in mixed:
        torch.testing.assert_close(a.sum(1), torch.ones(size), rtol=0, atol=1e-5)
    # And the float64 reference's full rollout matrix has the same property.
    R = ref.ref_rollout_matrix(model, inputs, sink_positions(layout) if exclude_sinks else ())
    torch.testing.assert_close(R.sum(1), torch.ones(R.shape[0], dtype=torch.float64), rtol=0, atol=1e-5)


# --- gradcam_attn ------------------------------------------------------------------------------

def test_gradcam_attn_is_zero_where_the_layer_cannot_move_the_logit(tiny):
    """Grad-CAM on attention is ReLU(dz/dA * A): a layer whose attention output is discarded (o_proj = 0)
    has dz/dA = 0 and an all-zero map, while another layer's map is non-zero and non-negative."""
    model, processor, image = tiny
    dead = copy.deepcopy(model)
    dead.model.language_model.layers[-1].self_attn.o_proj.weight.data.zero_()
    last = glimpse.explain(dead, processor, image, QUESTION, answer=ANSWER, method="gradcam_attn")
    first = glimpse.explain(dead, processor, image, QUESTION, answer=ANSWER, method="gradcam_attn", layer=0)
    assert np.all(last.token_visual == 0) and np.all(last.token_prompt == 0)
    assert first.token_visual.min() >= 0 and first.token_visual.max() > 0


def test_gradcam_attn_is_the_gradient_times_attention_of_the_query_row(tiny):
    """Scaling the answer logits scales dz/dA, hence the map, by the same factor (lm_head x 2 -> map x 2)."""
    model, processor, image = tiny
    doubled = copy.deepcopy(model)
    doubled.lm_head.weight.data.mul_(2.0)
    base = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="gradcam_attn")
    twice = glimpse.explain(doubled, processor, image, QUESTION, answer=ANSWER, method="gradcam_attn")
    np.testing.assert_allclose(twice.token_visual, 2 * base.token_visual, rtol=1e-4, atol=1e-9)


# --- glimpse_fast --------------------------------------------------------------------------------

def test_glimpse_fast_equals_glimpse_for_a_one_token_answer(tiny):
    model, processor, image = tiny
    exact = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, max_answer_tokens=1)
    fast = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, max_answer_tokens=1,
                           method="glimpse_fast")
    assert len(exact.answer_token_ids) == 1
    fast_arrays, exact_arrays = named_like_reference(fast), named_like_reference(exact)
    assert fast_arrays.keys() == exact_arrays.keys()
    for name in exact_arrays:
        np.testing.assert_allclose(fast_arrays[name], exact_arrays[name], rtol=1e-5, atol=1e-8, err_msg=name)
    assert fast.approximate and not exact.approximate
    assert "(approximation)" in fast.to_html() and "(approximation)" not in exact.to_html()
    longer = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="glimpse_fast")
    assert len(longer.answer_token_ids) > 1 and longer.approximate


# --- pixel methods ---------------------------------------------------------------------------------

def answer_log_likelihood(model, inputs, Y, per_token=False):
    """A captum-style forward: pixel_values [B, C, H, W] -> log-likelihood of the answer [B] (or [B, T])."""
    ids = inputs["input_ids"]

    def forward(pixels):
        n = pixels.shape[0]
        logits = model(input_ids=ids.expand(n, -1), attention_mask=inputs["attention_mask"].expand(n, -1),
                       pixel_values=pixels).logits
        rows = logits[:, [y - 1 for y in Y]].log_softmax(-1)
        lp = rows.gather(-1, ids[:, Y].expand(n, -1)[..., None])[..., 0]
        return lp if per_token else lp.sum(-1)
    return forward


def captum_case(method, **options):
    model, processor = build_tiny_llava(seed=6, layers=2)
    explanation = glimpse.explain(model, processor, rand_image(64, 48, seed=6), QUESTION, answer=ANSWER,
                                  method=method, **options)
    inputs, Y, V, P = reference_inputs(processor, explanation, QUESTION)
    return model, processor, explanation, inputs, Y


def test_integrated_gradients_matches_captum():
    model, processor, explanation, inputs, Y = captum_case("integrated_gradients", steps=16)
    x = inputs["pixel_values"]
    baseline = ref.black(processor, x)
    holistic = IntegratedGradients(answer_log_likelihood(model, inputs, Y)).attribute(
        x, baselines=baseline, n_steps=16, method="gausslegendre", internal_batch_size=16)
    pooled = ref.pool(holistic.detach(), model).numpy()
    assert pearson(explanation.visual, pooled) >= 0.999
    np.testing.assert_allclose(explanation.visual, pooled, rtol=1e-2, atol=1e-3 * np.abs(pooled).max())
    per_token = IntegratedGradients(answer_log_likelihood(model, inputs, Y, per_token=True))
    for t in range(len(Y)):
        attr = per_token.attribute(x, baselines=baseline, target=t, n_steps=16, method="gausslegendre")
        assert pearson(explanation.token_visual[t], ref.pool(attr.detach(), model).numpy()) >= 0.999


def test_input_x_gradient_matches_captum():
    model, processor, explanation, inputs, Y = captum_case("input_gradient")
    x = inputs["pixel_values"]
    per_token = InputXGradient(answer_log_likelihood(model, inputs, Y, per_token=True))
    for t in range(len(Y)):
        pooled = ref.pool(per_token.attribute(x.clone().requires_grad_(True), target=t).detach(), model).numpy()
        assert pearson(explanation.token_visual[t], pooled) >= 0.999
        np.testing.assert_allclose(explanation.token_visual[t], pooled, rtol=1e-3, atol=1e-4 * np.abs(pooled).max())


def test_occlusion_matches_captum():
    model, processor, explanation, inputs, Y = captum_case("occlusion")
    x = inputs["pixel_values"]
    patch = model.config.vision_config.patch_size
    attr = CaptumOcclusion(answer_log_likelihood(model, inputs, Y)).attribute(
        x, sliding_window_shapes=(3, patch, patch), strides=(3, patch, patch), baselines=0.0)
    # captum gives every pixel of a block the block's drop: the block mean is the token's score.
    per_block = ref.pool(attr.detach(), model).numpy() / (3 * patch * patch)
    assert pearson(explanation.visual, per_block) >= 0.999
    np.testing.assert_allclose(explanation.visual, per_block, rtol=1e-3, atol=1e-4 * np.abs(per_block).max())


def test_integrated_gradients_completeness(tiny):
    """Attributions add up to f(x) - f(baseline): the answer's log-likelihood and each token's log-probability
    (pixels from the black image), and the same for the prompt path (from zero question embeddings)."""
    model, processor, image = tiny
    explanation = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="integrated_gradients")
    inputs, Y, V, P = reference_inputs(processor, explanation, QUESTION)
    with torch.no_grad():
        forward = answer_log_likelihood(model, inputs, Y, per_token=True)
        x = inputs["pixel_values"]
        gap = (forward(x) - forward(ref.black(processor, x)))[0].numpy()
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        zeroed = embeds.clone()
        zeroed[0, P] = 0
        kwargs = dict(attention_mask=inputs["attention_mask"], pixel_values=x)
        ids = inputs["input_ids"][0]

        def token_log_probs(e):
            logits = model(inputs_embeds=e, **kwargs).logits[0]
            return np.array([float(torch.log_softmax(logits[y - 1], -1)[ids[y]]) for y in Y])
        prompt_gap = token_log_probs(embeds) - token_log_probs(zeroed)
    assert abs(gap.sum()) > 1e-2 and abs(prompt_gap.sum()) > 1e-2
    np.testing.assert_allclose(explanation.visual.sum(), gap.sum(), rtol=0.02)
    np.testing.assert_allclose(explanation.token_visual.sum(1), gap, rtol=0.02, atol=0.02 * np.abs(gap).max())
    np.testing.assert_allclose(explanation.prompt.sum(), prompt_gap.sum(), rtol=0.02)


def test_occluding_a_region_the_model_cannot_see_changes_nothing(tiny):
    """With a token-local vision tower (its attention output zeroed: each image token sees only its own
    pixel block) and the language model barred from one image token (attention mask 0 there), occluding that
    token's block cannot change any answer log-probability, while other blocks do."""
    model, processor, image = tiny
    local = copy.deepcopy(model)
    for layer in local.model.vision_tower.encoder.layers:
        layer.self_attn.out_proj.weight.data.zero_()
        layer.self_attn.out_proj.bias.data.zero_()
    adapter, inputs, layout = prepared(local, processor, image)
    blind = 5
    inputs["attention_mask"] = inputs["attention_mask"].clone()
    inputs["attention_mask"][0, layout.image_positions[blind]] = 0
    result = get_method("occlusion").run(local, adapter, inputs, layout)
    assert torch.all(result.token_visual[:, blind].abs() < 1e-6) and abs(float(result.visual[blind])) < 1e-6
    others = torch.cat([result.token_visual[:, :blind], result.token_visual[:, blind + 1:]], 1)
    assert others.abs().max() > 1e-3
    # Token locality itself: occluding one block changes that image token's features only.
    x = inputs["pixel_values"]
    occluded = x.clone()
    y0, y1, x0, x1 = ref.blocks(local, x)[blind]
    occluded[:, :, y0:y1, x0:x1] = 0
    with torch.no_grad():
        before = torch.cat(local.get_image_features(pixel_values=x).pooler_output)
        after = torch.cat(local.get_image_features(pixel_values=occluded).pooler_output)
    changed = (before - after).abs().amax(-1) > 1e-6
    assert changed.nonzero().flatten().tolist() == [blind]


def test_occlusion_windows_cover_every_token_and_average(tiny):
    from glimpse.methods.pixels import occlusion_regions

    model, processor, image = tiny
    _, _, layout = prepared(model, processor, image)
    regions = occlusion_regions(layout, window=3, stride=2)  # 4 x 4 grid: starts 0 and 1 on each axis
    assert len(regions) == 4 and all(len(r) == 9 for r in regions)
    assert set().union(*map(set, regions)) == set(range(16))
    assert occlusion_regions(layout, window=1, stride=1) == [[i] for i in range(16)]


@pytest.mark.parametrize("name", ["input_gradient", "integrated_gradients", "occlusion"])
def test_pixel_methods_refuse_adapters_without_pixel_blocks(tiny, name, monkeypatch):
    """An adapter that cannot map image tokens to pixel blocks gets a clear MethodError."""
    model, processor, image = tiny
    adapter, inputs, layout = prepared(model, processor, image)

    monkeypatch.setattr(adapter, "pixel_blocks", False)
    with pytest.raises(glimpse.MethodError, match="map image tokens to pixel blocks"):
        get_method(name).run(model, adapter, inputs, layout)
    with pytest.raises(glimpse.MethodError, match="needs pixel_values"):
        get_method(name).run(model, adapter, {k: v for k, v in inputs.items() if k != "pixel_values"}, layout)


# --- TAM pieces --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,kernel", [((4, 4), 3), ((5, 3), 3), ((6, 7), 5), ((2, 6), 3)])
def test_rank_gaussian_filter_matches_its_direct_form(shape, kernel):
    from glimpse.methods.tam import rank_gaussian_filter

    grid = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape))) - 0.2
    grid[0, 0] = 0.0
    ours = rank_gaussian_filter(grid.clamp(min=0), kernel)
    expected = ref.ref_rank_gaussian_filter(grid.clamp(min=0).double(), kernel)
    torch.testing.assert_close(ours.double(), expected, rtol=1e-5, atol=1e-7)


def test_rank_gaussian_filter_edge_cases():
    from glimpse.methods.tam import rank_gaussian_filter

    torch.testing.assert_close(rank_gaussian_filter(torch.full((3, 4), 2.5)), torch.full((3, 4), 2.5))
    assert torch.all(rank_gaussian_filter(torch.zeros(4, 4)) == 0)
    one_row = rank_gaussian_filter(torch.tensor([[0.0, 1.0, 4.0]]))  # too short to reflect: replicate
    assert one_row.shape == (1, 3) and torch.all(torch.isfinite(one_row))
    grid = torch.rand(4, 4)
    torch.testing.assert_close(rank_gaussian_filter(grid, 1), grid)
    torch.testing.assert_close(rank_gaussian_filter(3 * grid), 3 * rank_gaussian_filter(grid))


def test_interference_removal_is_the_least_squares_residual():
    from glimpse.methods.tam import remove_interference

    interference = torch.tensor([1.0, 2.0, 0.0, 1.0])
    out, scale = remove_interference(3 * interference, interference)
    torch.testing.assert_close(out, torch.zeros(4))
    assert scale == pytest.approx(3.0)
    own = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out, scale = remove_interference(own, interference)
    assert scale == pytest.approx(float(own @ interference / (interference @ interference)))
    torch.testing.assert_close(out, (own - scale * interference).clamp(min=0))
    out, scale = remove_interference(own, torch.zeros(4))
    torch.testing.assert_close(out, own)
    assert scale == 0.0


def test_tam_falls_back_to_the_logits_when_the_head_does_not_reproduce_them(tiny, monkeypatch):
    model, processor, image = tiny
    expected = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="tam")
    wrong = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=False)
    monkeypatch.setattr(type(model), "get_output_embeddings", lambda self: wrong)
    with pytest.warns(glimpse.CostWarning, match="TAM ran a second forward pass"):
        fallback = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="tam")
    np.testing.assert_allclose(fallback.token_visual, expected.token_visual, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fallback.token_prompt, expected.token_prompt, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["tam", "input_gradient", "occlusion", "rollout"])
def test_methods_leave_the_model_as_they_found_it(tiny, method):
    model, processor, image = tiny
    model.train()
    model.lm_head.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    try:
        glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method=method)
        assert model.training and [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.lm_head.weight.requires_grad_(True)
        model.eval()
