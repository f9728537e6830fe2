"""The method registry and what every method declares: options, its own result section, the
quantity it explains and its token ranking."""

import inspect

import numpy as np
import pytest

import glimpse
from glimpse.methods import Method, get_method, list_methods, option_defaults, register_method, unregister_method
from glimpse.methods.base import MethodResult
from tiny_models import rand_image

QUESTION = "what color is the object?"
ANSWER = " a red circle"


@pytest.fixture(scope="module")
def explanations(tiny_llava):
    model, processor = tiny_llava
    image = rand_image(64, 48, seed=5)
    return {name: glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method=name,
                                  **({"steps": 4} if name == "integrated_gradients" else {}))
            for name in list_methods()}


@pytest.mark.parametrize("name", list(list_methods()))
def test_every_method_fills_the_core_and_exactly_its_declared_section(explanations, name):
    cls, e = list_methods()[name], explanations[name]
    T = len(e.answer_token_ids)
    assert e.token_weights.shape == e.probs.shape == e.ranking.shape == (T,)
    assert set(e.details) == set(cls.details) and e.details_doc == cls.details
    assert e.explained == cls.explains and e.ranking_by == cls.token_ranking
    assert set(e.params) == set(cls.options)
    np.testing.assert_allclose(e.visual, e.token_weights @ e.token_visual, rtol=1e-5, atol=1e-7)
    assert e.top_tokens(2) == sorted(np.argsort(-e.ranking, kind="stable")[:2].tolist())


def test_baselines_rank_tokens_by_their_positive_contribution_glimpse_by_gamma(explanations):
    e = explanations["raw_attention"]
    np.testing.assert_allclose(e.ranking, e.token_weights * np.clip(e.token_visual, 0, None).sum(1), rtol=1e-6)
    np.testing.assert_array_equal(explanations["glimpse"].ranking, explanations["glimpse"].details["gamma"])
    assert not {"gamma", "beta_prompt", "alpha"} & set(e.details)


def test_explained_quantities():
    explains = {name: cls.explains for name, cls in list_methods().items()}
    assert explains["glimpse"] == explains["gradcam_attn"] == explains["tam"] == "logit"
    assert explains["raw_attention"] == explains["rollout"] == "attention"
    assert explains["integrated_gradients"] == explains["occlusion"] == "log_prob"


def test_integrated_gradients_reports_its_completeness_error(tiny_llava):
    """Completeness: the attributions sum to f(x) - f(x'); with enough Gauss-Legendre points the error vanishes."""
    model, processor = tiny_llava
    image = rand_image(64, 48, seed=5)
    coarse, fine = (glimpse.explain(model, processor, image, QUESTION, answer=ANSWER, method="integrated_gradients",
                                    steps=steps) for steps in (4, 128))
    for name in ("completeness_error", "prompt_completeness_error"):
        assert np.abs(fine.details[name]).max() < 1e-4
        assert np.abs(coarse.details[name]).max() > 10 * np.abs(fine.details[name]).max()


def test_an_option_the_method_does_not_take_is_an_error():
    with pytest.raises(glimpse.OptionError, match="'rollout' does not take 'head_lambda'; it takes: exclude_sinks"):
        get_method("rollout", head_lambda=2)
    with pytest.raises(glimpse.OptionError, match="takes: no options"):
        get_method("input_gradient", steps=3)


def test_a_bug_in_a_method_constructor_is_not_called_an_invalid_option():
    class Broken(Method):
        name = "broken_for_test"
        options = {"size": "a size"}

        def __init__(self, size: int = 1) -> None:
            raise TypeError("a bug inside the constructor")

        def run(self, model, adapter, inputs, layout) -> MethodResult:
            raise AssertionError

    register_method(Broken)
    try:
        with pytest.raises(TypeError, match="a bug inside"):
            get_method("broken_for_test", size=2)
    finally:
        unregister_method("broken_for_test")


def test_registration_checks_the_declaration():
    class Undeclared(Method):
        name = "undeclared_for_test"

        def __init__(self, size: int = 1) -> None:
            self.size = size

        def run(self, model, adapter, inputs, layout) -> MethodResult:
            raise AssertionError

    with pytest.raises(glimpse.MethodError, match="declares \\[\\], but the constructor takes \\['size'\\]"):
        register_method(Undeclared)
    assert "undeclared_for_test" not in list_methods()


@pytest.mark.parametrize("name", list(list_methods()))
def test_options_are_declared_once_with_defaults_and_help(name):
    cls = list_methods()[name]
    defaults = option_defaults(cls)
    assert list(defaults) == list(cls.options) or set(defaults) == set(cls.options)
    assert all(default is not inspect.Parameter.empty for default in defaults.values())
    assert all(text.strip() for text in cls.options.values())
    assert get_method(name).params() == defaults


def test_a_method_written_in_one_class_runs_everywhere_a_builtin_does(tiny_llava, tmp_path):
    """The recipe of docs/methods.md: one AttentionMethod subclass, registered, is explained, saved, reported."""
    from glimpse.methods import AttentionMethod
    from glimpse.methods.attention import head_mean, token_rows_result

    class LastLayerAttention(AttentionMethod):
        name = "last_layer_attention_for_test"
        summary = "attention of the last layer"
        paper = "-"
        explains = "attention"
        gradients = "none"
        options = {"scale": "a factor on every score"}
        details = {"row_sums": "[T] sum of each token's attention row over V and P"}

        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            self.scale = scale

        def layers(self, n_layers):
            return [n_layers - 1]

        def reduce_layer(self, attn, grad, query):
            return {"attn": head_mean(attn, query) * self.scale}

        def combine(self, trace, layout):
            matrix = trace.shared[trace.layers[0]]["attn"]
            result = token_rows_result(list(matrix[layout.queries]), layout, trace.layers)
            result.details["row_sums"] = result.token_visual.sum(1) + result.token_prompt.sum(1)
            return result

    register_method(LastLayerAttention)
    try:
        model, processor = tiny_llava
        e = glimpse.explain(model, processor, rand_image(64, 48, seed=5), QUESTION, answer=ANSWER,
                            method="last_layer_attention_for_test", scale=2.0)
        assert e.params == {"scale": 2.0} and e.layers == [1] and set(e.details) == {"row_sums"}
        e.save(tmp_path / "e")
        again = glimpse.Explanation.load(tmp_path / "e")
        np.testing.assert_array_equal(again.details["row_sums"], e.details["row_sums"])
        assert ">row_sums</th>" in (tmp_path / "e" / "report.html").read_text()
    finally:
        unregister_method("last_layer_attention_for_test")


@pytest.mark.parametrize("text, value", [("exclude_sinks=False", False), ("exclude_sinks=FALSE", False),
                                         ("exclude_sinks=true", True), ("exclude_sinks=True", True)])
def test_booleans_are_read_strictly(text, value):
    from glimpse.methods import parse_options

    options = parse_options([text])
    assert options == {"exclude_sinks": value} and get_method("glimpse", **options).exclude_sinks is value


def test_a_boolean_option_refuses_other_text_and_numbers_must_be_finite():
    from glimpse.methods import parse_options

    with pytest.raises(glimpse.OptionError, match="'exclude_sinks' of method 'glimpse' must be bool, got 'no'"):
        get_method("glimpse", **parse_options(["exclude_sinks=no"]))
    for text in ("head_lambda=NaN", "depth_lambda=Infinity", "head_lambda=-Infinity", "depth_lambda=nan",
                 "head_lambda=inf", "head_lambda=-INF"):
        with pytest.raises(glimpse.OptionError, match="must be a finite number"):
            get_method("glimpse", **parse_options([text]))
    with pytest.raises(glimpse.OptionError, match="must be a finite number, got nan"):
        get_method("glimpse", head_lambda=float("nan"))
    # Only JSON's numbers and the non-finite spellings are numbers: Python's other float texts stay text.
    assert parse_options(["head_lambda=1_0"]) == {"head_lambda": "1_0"}
    with pytest.raises(glimpse.OptionError, match="must be float, got '1_0'"):
        get_method("glimpse", **parse_options(["head_lambda=1_0"]))
