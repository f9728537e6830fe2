"""Captures share no state: two models explained at once on two threads, interleaved captures on
one thread, and no registration left behind after many captures."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

import glimpse
from capture_checks import leftover_registrations
from glimpse.capture import CAPTURE_PREFIX, Capture
from tiny_models import build_tiny_llava, rand_image

QUESTION = "what color is the object?"
FIELDS = ("token_visual", "token_prompt", "visual", "prompt")
# (image seed, answer) of each explanation a worker runs.
CASES = [(0, " a red circle"), (1, " blue"), (2, " a green square"), (3, " red")]


@pytest.fixture(scope="module")
def two_models():
    """Two different tiny LLaVAs: other weights and another language-model depth (2 and 3 layers), so
    an explanation that recorded the other model's attention would show it in its layers."""
    return [build_tiny_llava(seed=0, layers=2), build_tiny_llava(seed=1, layers=3)]


def explain_all(model, processor):
    return [glimpse.explain(model, processor, rand_image(64, 48, seed=seed), QUESTION, answer=answer,
                            method="glimpse") for seed, answer in CASES]


def assert_same(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.layers == b.layers
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


class Concurrency:
    """Counts the captures running at once (wrapping `Capture.run`), to prove the threads overlapped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def wrap(self, run):
        def counted(capture, *args, **kwargs):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            try:
                return run(capture, *args, **kwargs)
            finally:
                with self.lock:
                    self.running -= 1
        return counted


def test_two_models_on_two_threads_match_sequential_runs(two_models, monkeypatch):
    sequential = [explain_all(model, processor) for model, processor in two_models]
    # Each explanation is its own model's: its depth, and results the other model does not give.
    for (model, _), results in zip(two_models, sequential):
        assert all(r.layers == list(range(model.config.text_config.num_hidden_layers)) for r in results)
    assert not np.array_equal(sequential[0][0].token_visual, sequential[1][0].token_visual)

    concurrency = Concurrency()
    monkeypatch.setattr(Capture, "run", concurrency.wrap(Capture.run))
    barrier = threading.Barrier(len(two_models))

    def worker(pair):
        model, processor = pair
        barrier.wait(timeout=60)
        return explain_all(model, processor)

    with ThreadPoolExecutor(max_workers=len(two_models)) as pool:
        concurrent = list(pool.map(worker, two_models))
    assert concurrency.most == 2, "the two threads' captures never ran at the same time"
    for got, expected in zip(concurrent, sequential):
        assert_same(got, expected)
    assert leftover_registrations() == []


def recording_reducer(seen):
    def reduce(attn, grad, query):
        seen.append(attn.shape)
        return {"row": attn[:, query].sum(0)}
    return reduce


def inputs_for(model, processor, answer=" a red"):
    adapter = glimpse.adapter_for(model, processor)
    image = rand_image(64, 48)
    text = adapter.render_prompt(QUESTION, 1)
    ids = adapter.answer_ids(text, answer)
    inputs = adapter.with_answer(adapter.encode([image], text), ids)
    return inputs, adapter.layout(inputs, [image], text, QUESTION, len(ids))


def test_interleaved_captures_of_two_models_on_one_thread(two_models):
    """Captures are not a stack: two open at once, run and closed in any order, each records only its own model."""
    (model_a, proc_a), (model_b, proc_b) = two_models
    alone = []
    for model, processor in two_models:
        with Capture(model, "text_config", recording_reducer([])) as cap:
            alone.append(cap.run(*inputs_for(model, processor), gradients="none"))
    seen_a, seen_b = [], []
    cap_a = Capture(model_a, "text_config", recording_reducer(seen_a)).__enter__()
    cap_b = Capture(model_b, "text_config", recording_reducer(seen_b)).__enter__()
    assert cap_a.name != cap_b.name
    trace_b = cap_b.run(*inputs_for(model_b, proc_b), gradients="none")
    trace_a = cap_a.run(*inputs_for(model_a, proc_a), gradients="none")
    cap_a.__exit__(None, None, None)
    assert model_a.config.text_config._attn_implementation == "eager"
    assert model_b.config.text_config._attn_implementation == cap_b.name
    cap_b.__exit__(None, None, None)
    assert (len(seen_a), len(seen_b)) == (2, 3)
    for trace, expected in zip((trace_a, trace_b), alone):
        assert trace.layers == expected.layers
        for layer in expected.layers:
            torch.testing.assert_close(trace.shared[layer]["row"], expected.shared[layer]["row"], rtol=0, atol=0)
    assert leftover_registrations() == []


def test_capture_attention_refuses_another_models_modules(two_models):
    (model_a, _), (model_b, _) = two_models
    foreign = model_b.model.language_model.layers[0].self_attn
    q = torch.zeros(1, 4, 3, 8)
    kv = torch.zeros(1, 2, 3, 8)
    with Capture(model_a, "text_config", recording_reducer([])) as cap:
        attention = ALL_ATTENTION_FUNCTIONS[cap.name]
        with pytest.raises(glimpse.CaptureError, match="outside the model being captured"):
            attention(foreign, q, kv, kv, None)
        assert not cap.recorder.attn


def test_a_failed_enter_leaves_nothing_registered(two_models, monkeypatch):
    model, _ = two_models[0]
    original = type(model).set_attn_implementation

    def refuse_capture(self, implementation, **kwargs):
        if CAPTURE_PREFIX in str(implementation):
            raise ValueError("refused")
        return original(self, implementation, **kwargs)

    monkeypatch.setattr(type(model), "set_attn_implementation", refuse_capture)
    with pytest.raises(ValueError, match="refused"), Capture(model, "text_config", recording_reducer([])):
        pass
    assert leftover_registrations() == []
    assert model.config.text_config._attn_implementation == "eager"
    assert not model.get_input_embeddings()._forward_hooks


def test_a_thousand_captures_leave_no_registration(two_models):
    model, processor = two_models[0]
    before = (model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation,
              model.training, [p.requires_grad for p in model.parameters()])
    sizes = (len(AttentionInterface._global_mapping), len(ALL_ATTENTION_FUNCTIONS),
             len(AttentionMaskInterface._global_mapping), len(ALL_MASK_ATTENTION_FUNCTIONS))
    inputs, layout = inputs_for(model, processor)
    names = set()
    for i in range(1000):
        capture = Capture(model, "text_config", recording_reducer([]))
        try:
            with capture:
                names.add(capture.name)
                if i % 100 == 0:
                    capture.run(inputs, layout, gradients="none")
                if i % 7 == 0:
                    raise KeyError(i)
        except KeyError as error:
            assert error.args == (i,)
    assert len(names) == 1000
    assert leftover_registrations() == []
    assert sizes == (len(AttentionInterface._global_mapping), len(ALL_ATTENTION_FUNCTIONS),
                     len(AttentionMaskInterface._global_mapping), len(ALL_MASK_ATTENTION_FUNCTIONS))
    assert before == (model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation,
                      model.training, [p.requires_grad for p in model.parameters()])
    assert not model.get_input_embeddings()._forward_hooks
