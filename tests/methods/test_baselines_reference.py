"""Every baseline method against its direct float64 reference (tests/methods/reference_baselines.py).

Same standard as GLIMPSE's reference test: Pearson r >= 0.9999 and close values, on two seeds, for given
answers; positions V, P and Y are found independently of the library.
"""

import pytest
import reference_baselines as ref

import glimpse
from reference import assert_match, reference_glimpse, reference_inputs
from tiny_models import build_tiny_llava, rand_image

pytestmark = pytest.mark.every_path  # every GLIMPSE run here: full-matrix, block-wise and batched

QUESTION = "what color is the object?"
ANSWERS = {0: " a red circle on the left", 1: " the circle is red"}
ARRAYS = ("token_visual", "token_prompt", "visual", "prompt", "token_weights")


def make_case(seed):
    model, processor = build_tiny_llava(seed=seed, layers=3)
    return seed, model, processor, rand_image(72, 56, seed=seed)


@pytest.fixture(scope="module", params=[0, 1])
def case(request):
    return make_case(request.param)


@pytest.fixture(scope="module")
def first_case():
    return make_case(0)


def explain_and_reference(case, method, reference, atol=1e-6, **options):
    seed, model, processor, image = case
    explanation = glimpse.explain(model, processor, image, QUESTION, answer=ANSWERS[seed], method=method,
                                  max_answer_tokens=4, **options)
    inputs, Y, V, P = reference_inputs(processor, explanation, QUESTION)
    expected = reference(model, processor, inputs, Y, V, P)
    for name in ARRAYS:
        assert_match(getattr(explanation, name), expected[name], f"{method} {name}", atol=atol)
    return explanation


def sinks_of(V, P):
    return tuple(p for p in range(min(V)) if p not in P)


@pytest.mark.parametrize("layer", [None, 0, -1])
def test_raw_attention(case, layer):
    explanation = explain_and_reference(
        case, "raw_attention", lambda m, p, i, Y, V, P: ref.ref_raw_attention(m, i, Y, V, P, layer=layer), layer=layer)
    assert explanation.layers == ([0, 1, 2] if layer is None else [layer % 3])


def test_rollout(case):
    explain_and_reference(case, "rollout", lambda m, p, i, Y, V, P: ref.ref_rollout(m, i, Y, V, P))


@pytest.mark.parametrize("method", ["gradcam_attn", "agcam"])
def test_gradcam_attn(case, method):
    explain_and_reference(case, method, lambda m, p, i, Y, V, P: ref.ref_gradcam_attn(m, i, Y, V, P))
    explain_and_reference(case, method, lambda m, p, i, Y, V, P: ref.ref_gradcam_attn(m, i, Y, V, P, layer=0),
                          layer=0)


def test_gae(case):
    explain_and_reference(case, "gae", lambda m, p, i, Y, V, P: ref.ref_gae(m, i, Y, V, P))


def test_glimpse_fast(case):
    explanation = explain_and_reference(
        case, "glimpse_fast", lambda m, p, i, Y, V, P: reference_glimpse(m, i, Y, V, P, summed_gradients=True))
    assert explanation.approximate


def attention_references():
    return {
        "raw_attention": lambda m, i, Y, V, P, s: ref.ref_raw_attention(m, i, Y, V, P, sinks=s),
        "rollout": lambda m, i, Y, V, P, s: ref.ref_rollout(m, i, Y, V, P, sinks=s),
        "gradcam_attn": lambda m, i, Y, V, P, s: ref.ref_gradcam_attn(m, i, Y, V, P, sinks=s),
        "gae": lambda m, i, Y, V, P, s: ref.ref_gae(m, i, Y, V, P, sinks=s),
        "glimpse": lambda m, i, Y, V, P, s: reference_glimpse(m, i, Y, V, P, sinks=s),
        "glimpse_fast": lambda m, i, Y, V, P, s: reference_glimpse(m, i, Y, V, P, sinks=s, summed_gradients=True),
    }


@pytest.mark.parametrize("method", list(attention_references()))
def test_exclude_sinks_matches_reference_with_sink_columns_zeroed(first_case, method):
    reference = attention_references()[method]
    explanation = explain_and_reference(
        first_case, method, lambda m, p, i, Y, V, P: reference(m, i, Y, V, P, sinks_of(V, P)), exclude_sinks=True)
    assert explanation.params["exclude_sinks"] is True


@pytest.mark.parametrize("options", [{}, {"causal_inference": False}, {"kernel_size": 1}])
def test_tam(case, options):
    def reference(m, p, i, Y, V, P):
        return ref.ref_tam(m, i, Y, V, P, grid=(4, 4), **options)
    explain_and_reference(case, "tam", reference, **options)


def test_input_gradient(case):
    explain_and_reference(case, "input_gradient", ref.ref_input_gradient)


def test_integrated_gradients(case):
    steps = 16 if case[0] == 0 else 6
    explain_and_reference(case, "integrated_gradients",
                          lambda m, p, i, Y, V, P: ref.ref_integrated_gradients(m, p, i, Y, V, P, steps),
                          steps=steps, batch_size=4)


@pytest.mark.parametrize("options", [{}, {"window": 2, "stride": 1, "baseline": "black", "prompt_token": "pad",
                                          "batch_size": 3}])
def test_occlusion(case, options):
    # Drops are differences of float32 log-probabilities: absolute agreement to ~1e-5 of the largest drop.
    geometry = {k: v for k, v in options.items() if k != "batch_size"}
    explain_and_reference(case, "occlusion",
                          lambda m, p, i, Y, V, P: ref.ref_occlusion(m, p, i, Y, V, P, **geometry),
                          atol=1e-4, **options)
