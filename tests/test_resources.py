"""What an explanation cost (seconds, peak working memory) and running out of memory."""

import time

import pytest
import torch

import glimpse
from glimpse.methods.glimpse import Glimpse
from glimpse.resources import measured
from tiny_models import rand_image

QUESTION = "what color is the object?"


def test_the_peak_working_memory_of_a_block_is_measured_on_the_cpu():
    with measured(torch.device("cpu")) as cost:
        held = torch.ones(50_000_000)  # 200 MB, alive for a few samples
        time.sleep(0.2)
        del held
    assert cost["seconds"] >= 0.2 and cost["device"] == "cpu"
    assert 150 * 2**20 <= cost["peak_memory_bytes"] <= 400 * 2**20, cost
    with measured(torch.device("cpu")) as idle:
        pass
    assert idle["peak_memory_bytes"] < 50 * 2**20


def test_every_explanation_records_its_cost_and_keeps_it(tiny_llava, tmp_path):
    model, processor = tiny_llava
    result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    assert set(result.cost) == {"seconds", "peak_memory_bytes", "memory_source", "device", "attention_path"}
    assert result.cost["attention_path"] == "full_matrix"  # a tiny sequence: path="auto" keeps explicit matrices
    assert result.cost["seconds"] > 0 and result.cost["peak_memory_bytes"] >= 0
    result.save(tmp_path / "e")
    assert glimpse.Explanation.load(tmp_path / "e").cost == result.cost
    assert "peak working memory" in result.to_html() and "(full-matrix attention)" in result.to_html()


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9e10"),
                                   MemoryError()])
def test_running_out_of_memory_is_one_clear_error(tiny_llava, monkeypatch, error):
    model, processor = tiny_llava

    def out_of_memory(*args):
        raise error

    monkeypatch.setattr(Glimpse, "run", out_of_memory)
    advice = r"ran out of memory on a sequence of \d+ tokens.*\(max_answer_tokens\).*path='blockwise'.*max_memory"
    with pytest.raises(glimpse.ResourceError, match=advice):
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")


def test_other_runtime_errors_are_not_called_out_of_memory(tiny_llava, monkeypatch):
    model, processor = tiny_llava

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Glimpse, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
