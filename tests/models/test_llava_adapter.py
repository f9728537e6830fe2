"""The LLaVA-1.5 adapter: words of the question, token-count errors, the fallback prompt, registry errors.
The checks every family passes (layout, question, answer, pixels) are in test_adapter_contract.py."""

import pytest
import torch
from family_checks import prepare

import glimpse
from glimpse.models import adapter_for, supported_architectures
from glimpse.models.text import words_of_spans
from tiny_models import rand_image

QUESTION = "what color is the object?"


def decode(processor, inputs, positions):
    return processor.tokenizer.decode(inputs["input_ids"][0, list(positions)])


def test_words_merge_sub_word_pieces(tiny_llava):
    question = "Is the zebroid unmistakably purple?"
    _, inputs, layout = prepare(*tiny_llava, [rand_image(64, 48)], question=question)
    assert layout.prompt_words == ("Is", "the", "zebroid", "unmistakably", "purple")
    assert len(layout.word_of_token) == len(layout.prompt) > len(layout.prompt_words)
    assert list(layout.word_of_token) == sorted(layout.word_of_token)


def test_words_of_spans():
    words, word_of = words_of_spans("ab cd", [(0, 1), (1, 2), (2, 3), (3, 5)])
    assert words == ("ab", "cd") and word_of == (0, 0, 1, 1)


def test_token_count_mismatch_is_reported(tiny_llava):
    model, processor = tiny_llava
    adapter = adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, 1)
    inputs = adapter.encode([rand_image(64, 48)], text)
    with pytest.raises(glimpse.CaptureError, match="image tokens"):
        adapter.image_layouts(inputs, [rand_image(64, 48), rand_image(64, 48)])


def test_fallback_prompt_when_question_not_found(tiny_llava, monkeypatch):
    model, processor = tiny_llava
    adapter = adapter_for(model, processor)
    monkeypatch.setattr(type(adapter), "question_span", lambda self, *a: ([], []))
    _, inputs, layout = prepare(model, processor, [rand_image(64, 48)])
    assert not layout.question_located
    special = set(processor.tokenizer.all_special_ids)
    ids = inputs["input_ids"][0].tolist()
    assert all(ids[p] not in special for p in layout.prompt)
    assert QUESTION.replace(" ", "") in decode(processor, inputs, layout.prompt).replace(" ", "")


def test_answer_that_tokenizes_to_nothing(tiny_llava):
    model, processor = tiny_llava
    with pytest.raises(glimpse.AnswerError):
        adapter_for(model, processor).answer_ids("USER: hi ASSISTANT:", "   ")


def test_unsupported_model_names_supported_families():
    class Strange(torch.nn.Module):
        pass

    with pytest.raises(glimpse.UnsupportedModelError) as info:
        adapter_for(Strange(), None)
    for arch in supported_architectures():
        assert arch in str(info.value)
