"""Capture state is released whatever goes wrong inside (an error or Ctrl-C in a forward pass, in
glimpse's own recording, in a backward pass), and explaining many items in a loop holds no memory."""

import gc
import resource

import pytest
import torch

import glimpse
from capture_checks import leftover_registrations, model_state
from glimpse import capture as capture_module
from tiny_models import rand_image

QUESTION = "what color is the object?"
ANSWER = " a red circle"


def raise_in_forward(model, monkeypatch, error):
    """A language layer that fails in its forward pass."""
    def fail(module, args, output):
        raise error
    return model.model.language_model.layers[1].register_forward_hook(fail)


def raise_in_recording(model, monkeypatch, error):
    """glimpse's own recording of a layer's attention (either path) fails."""
    def fail(*args):
        raise error
    monkeypatch.setattr(capture_module._Recorder, "record", fail)
    monkeypatch.setattr(capture_module._Recorder, "record_blocks", fail)


def raise_in_backward(model, monkeypatch, error):
    """The gradient flowing back through a language layer fails (a tensor hook on its output)."""
    def fail(grad):
        raise error

    def hook(module, args, output):
        output = output[0] if isinstance(output, tuple) else output
        output.register_hook(fail)
    return model.model.language_model.layers[0].register_forward_hook(hook)


PLACES = {"forward": raise_in_forward, "recording": raise_in_recording, "backward": raise_in_backward}


@pytest.mark.every_path
@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
@pytest.mark.parametrize("place", PLACES)
def test_released_after_a_failure_anywhere_inside(tiny_llava, monkeypatch, place, error):
    model, processor = tiny_llava
    image = rand_image(64, 48)
    expected = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER)
    before = model_state(model)
    with monkeypatch.context() as patched:
        handle = PLACES[place](model, patched, error)
        try:
            with pytest.raises(type(error)):
                glimpse.explain(model, processor, image, QUESTION, answer=ANSWER)
        finally:
            if handle is not None:
                handle.remove()
    assert model_state(model) == before and leftover_registrations() == []
    assert all(p.grad is None for p in model.parameters())
    again = glimpse.explain(model, processor, image, QUESTION, answer=ANSWER)  # nothing stale is left to mix in
    torch.testing.assert_close(torch.from_numpy(again.token_visual), torch.from_numpy(expected.token_visual))


def live_tensors() -> int:
    gc.collect()
    return sum(1 for thing in gc.get_objects() if issubclass(type(thing), torch.Tensor))  # type(): no properties run


def test_explaining_200_items_in_a_loop_holds_no_memory(tiny_llava):
    model, processor = tiny_llava
    images = [rand_image(64, 48, seed=seed) for seed in range(4)]

    def explain_some(n):
        for i in range(n):
            glimpse.explain(model, processor, images[i % 4], QUESTION, answer=ANSWER)

    explain_some(20)  # allocator pools and caches filled
    tensors, peak = live_tensors(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    explain_some(180)
    assert live_tensors() <= tensors, "tensors left alive by 180 explanations"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grown < 64 * 1024, f"peak resident memory grew by {grown / 1024:.0f} MiB over 180 explanations"
