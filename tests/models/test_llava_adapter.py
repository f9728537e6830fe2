"""The LLaVA-1.5 adapter: question span, image layout, answer tokens, registry errors."""

import pytest
import torch

import glimpse
from glimpse.models import adapter_for, supported_architectures
from glimpse.models.base import words_of_spans
from tiny_models import rand_image

QUESTION = "what color is the object?"


def layout_for(model, processor, question=QUESTION, system=None, answer=" a red circle", images=1):
    adapter = adapter_for(model, processor)
    pictures = [rand_image(64, 48, seed=i) for i in range(images)]
    text = adapter.render_prompt(question, images, system)
    ids = adapter.answer_ids(text, answer)
    inputs = adapter.with_answer(adapter.encode(pictures, text), ids)
    return adapter, inputs, adapter.layout(inputs, pictures, text, question, len(ids))


def decode(processor, inputs, positions):
    return processor.tokenizer.decode(inputs["input_ids"][0, list(positions)])


def test_question_span_excludes_system_prompt_and_template(tiny_llava):
    model, processor = tiny_llava
    system = "You are a careful assistant. what color is the object? is not the question here."
    _, inputs, layout = layout_for(model, processor, system=system)
    assert layout.question_located
    assert decode(processor, inputs, layout.prompt).strip() == QUESTION
    # The question inside the system prompt comes earlier; the user's own question is the last one.
    text = decode(processor, inputs, range(layout.prompt[0]))
    assert "careful assistant" in text and "USER" in text


def test_words_merge_sub_word_pieces(tiny_llava):
    model, processor = tiny_llava
    question = "Is the zebroid unmistakably purple?"
    _, inputs, layout = layout_for(model, processor, question=question)
    assert layout.prompt_words == tuple(question.split())
    assert len(layout.word_of_token) == len(layout.prompt) > len(layout.prompt_words)
    assert list(layout.word_of_token) == sorted(layout.word_of_token)


def test_words_of_spans():
    words, word_of = words_of_spans("ab cd", [(0, 1), (1, 2), (2, 3), (3, 5)])
    assert words == ("ab", "cd") and word_of == (0, 0, 1, 1)


def test_image_and_answer_positions(tiny_llava):
    model, processor = tiny_llava
    _, inputs, layout = layout_for(model, processor, images=2)
    ids = inputs["input_ids"][0]
    image_id = model.config.image_token_id
    assert layout.image_positions == torch.nonzero(ids == image_id).flatten().tolist()
    assert [len(image.positions) for image in layout.images] == [16, 16]
    assert decode(processor, inputs, layout.answer) == " a red circle"
    assert layout.answer[-1] == len(ids) - 1 and layout.queries == [p - 1 for p in layout.answer]


def test_multi_image_explanation_has_one_map_per_image(tiny_llava):
    model, processor = tiny_llava
    pictures = [rand_image(64, 48, seed=1), rand_image(48, 64, seed=2)]
    result = glimpse.explain(model, processor, pictures, QUESTION, answer=" a red")
    assert len(result.layouts) == 2
    assert result.visual_map(image=0).shape == (48, 64) and result.visual_map(image=1).shape == (64, 48)
    assert result.token_visual.shape == (2, 32)


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
    _, inputs, layout = layout_for(model, processor)
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


@pytest.mark.parametrize("size", [(64, 48), (40, 90), (56, 56)])
def test_token_patches_match_gradient_footprints(size):
    """Each image token's pixels, as the adapter says, against the gradient ground truth."""
    from footprint import footprints
    from tiny_models import build_tiny_llava

    model, processor = build_tiny_llava(seed=1)
    pictures = [rand_image(*size, seed=1), rand_image(size[1], size[0], seed=2)]
    adapter = adapter_for(model, processor)
    text = adapter.render_prompt(QUESTION, 2)
    inputs = adapter.with_answer(adapter.encode(pictures, text), [5])
    layout = adapter.layout(inputs, pictures, text, QUESTION, 1)
    truth = footprints(model, model.model.vision_tower, model.model.language_model, inputs, layout.image_positions)
    assert adapter.token_patches(inputs, layout) == truth


def test_black_pixels_are_what_the_processor_makes_of_a_black_image(tiny_llava):
    from PIL import Image

    model, processor = tiny_llava
    adapter = adapter_for(model, processor)
    pixels = adapter.encode([Image.new("RGB", (70, 50))], adapter.render_prompt(QUESTION, 1))["pixel_values"]
    torch.testing.assert_close(adapter.black_pixels(pixels), pixels)
