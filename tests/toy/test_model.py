from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse.toy import model as toy_model
from glimpse.toy import train, world

TINY = toy_model.Dims(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1, text_heads=2,
                      text_mlp=64)
SAMPLES = world.make_dataset(40, seed=3)


@pytest.fixture(scope="module")
def processor():
    return toy_model.build_processor()


def test_answers_round_trip(processor) -> None:
    tok = processor.tokenizer
    for s in SAMPLES:
        ids = tok(s.answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == s.answer


def test_prompt_has_question_tokens_and_196_image_tokens(processor) -> None:
    s = SAMPLES[0]
    text = toy_model.prompt(processor, s.question)
    assert text == f"USER: <image>\n{s.question} ASSISTANT:"
    inputs = processor(images=s.image, text=text, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    tok = processor.tokenizer
    assert ids.count(tok.image_token_id) == 196 and ids[0] == tok.bos_token_id
    q = tok(s.question, add_special_tokens=False).input_ids
    assert any(ids[i:i + len(q)] == q for i in range(len(ids)))
    # training normalises pixels itself: it must match the processor
    assert torch.allclose(train.pixel_values([s.image]), inputs["pixel_values"], atol=1e-5)


def test_training_conversation_matches_chat_template(processor) -> None:
    turns = SAMPLES[:3]
    messages = []
    for i, s in enumerate(turns):
        image = [{"type": "image"}] if i == 0 else []
        messages += [{"role": "user", "content": image + [{"type": "text", "text": s.question}]},
                     {"role": "assistant", "content": [{"type": "text", "text": s.answer}]}]
    text = processor.apply_chat_template(messages)
    expected = processor(images=turns[0].image, text=text)["input_ids"][0]
    ids, labels = train.conversation([(s.question, s.answer) for s in turns])
    assert list(expected) == ids
    labelled = [i for i, l in zip(ids, labels) if l != -100]
    assert labelled == [i for s in turns for i in processor.tokenizer(" " + s.answer, add_special_tokens=False).input_ids
                        + [processor.tokenizer.eos_token_id]]


def test_patch_labels_follow_segmentation() -> None:
    s = SAMPLES[1]
    scene = world.Scene(s.image, s.objects, s.segmentation)
    labels = train.patch_labels(scene)
    assert labels.shape == (196, 5) and (labels[:, 3] == len(s.objects) - 1).all()
    assert ((labels[:, 4] >= 0) == (labels[:, 0] > 0)).all()
    for i, o in enumerate(s.objects):
        cy, cx = (o.y0 + o.size // 2) // 16, (o.x0 + o.size // 2) // 16  # the patch under the box centre
        shape, color, quad, _, owner = labels[cy * 14 + cx]
        if (s.segmentation[cy * 16:cy * 16 + 16, cx * 16:cx * 16 + 16] == i).sum() >= train.MIN_PATCH_PIXELS:
            assert (world.SHAPES[shape - 1], list(world.COLORS)[color - 1], train.QUADRANTS[quad - 1], owner) == \
                (o.shape, o.color, o.quadrant, i)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = toy_model.build_untrained(0, TINY)
    toy_model.save(model, processor, tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    s = SAMPLES[0]
    texts = [toy_model.prompt(p, s.question) for p in (processor, loaded_processor)]
    assert texts[0] == texts[1]
    a, b = (p(images=s.image, text=t, return_tensors="pt") for p, t in zip((processor, loaded_processor), texts))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(model.generate(**a), loaded.generate(**b))
    assert loaded.generation_config.eos_token_id == loaded_processor.tokenizer.eos_token_id


def test_shipped_model_answers() -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = toy_model.default_model_path()
    assert (folder / "model.safetensors").stat().st_size <= 25 * 2 ** 20
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    s = world.make_sample(np.random.default_rng([99, 0]))
    inputs = processor(images=s.image, text=toy_model.prompt(processor, s.question), return_tensors="pt")
    out = model.generate(**inputs)
    answer = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out[0, -1].item() == processor.tokenizer.eos_token_id  # it stops by itself
    assert answer.endswith(".") and set(answer[:-1].split()) <= set(world.vocabulary())


def test_shipped_model_is_the_trained_one() -> None:
    """The first 100 held-out scenes: the shipped weights score 98% there, each type >= 95.6%
    (`glimpse toy bench --n 100 --n-localisation 0`); the margin only absorbs numeric differences between machines."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from glimpse.toy.bench import evaluate_accuracy

    folder = toy_model.default_model_path()
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    accuracy = evaluate_accuracy(model, processor, n=100)
    assert accuracy["overall"] >= 0.93
    assert min(accuracy["per_type"].values()) >= 0.85
