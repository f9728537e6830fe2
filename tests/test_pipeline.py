"""`glimpse.explain`: the fallbacks it takes are visible three ways (warning, note, log)."""

import json
import logging
import warnings

import numpy as np
import pytest

import glimpse
from glimpse.models import adapter_for
from glimpse.toy import world
from tiny_models import rand_image

QUESTION = "what color is the object?"


def test_an_unlocated_question_is_warned_noted_and_logged(tiny_llava, monkeypatch, caplog, tmp_path):
    model, processor = tiny_llava
    monkeypatch.setattr(type(adapter_for(model, processor)), "question_span", lambda self, *a: ([], []))
    with caplog.at_level(logging.WARNING, logger="glimpse"), pytest.warns(glimpse.FallbackWarning,
                                                                          match="could not be located"):
        result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    assert not result.question_located and len(result.notes) == 1 and "could not be located" in result.notes[0]
    assert [r.getMessage() for r in caplog.records if r.name == "glimpse"] == result.notes
    result.save(tmp_path / "e", figures=False)
    assert glimpse.Explanation.load(tmp_path / "e").notes == result.notes
    assert "could not be located" in result.to_html()


def test_a_located_question_takes_no_fallback(tiny_llava):
    model, processor = tiny_llava
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        result = glimpse.explain(model, processor, rand_image(64, 48), QUESTION, answer=" a red circle")
    assert result.notes == [] and result.question_located


@pytest.fixture(scope="module")
def shipped():
    return glimpse.load(None, device="cpu")


def test_the_shipped_model_says_when_an_image_is_not_from_its_world(shipped):
    with pytest.warns(glimpse.DomainWarning, match="only the synthetic shapes world"):
        result = glimpse.explain(shipped.model, shipped.processor, rand_image(224, 224), "what color is the circle?",
                                 answer="the circle is red.")
    assert any("shapes world" in note for note in result.notes)


def test_the_shipped_model_on_its_own_world_warns_nothing(shipped):
    sample = world.make_sample(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        result = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question, answer=sample.answer)
    assert result.notes == []


def test_scene_detector_accepts_scenes_and_refuses_other_images():
    assert all(world.is_scene(world.make_sample(seed).image) for seed in range(100))
    assert not any(world.is_scene(rand_image(224, 224, seed=seed)) for seed in range(5))
    assert not world.is_scene(world.make_sample(0).image.resize((300, 300)))


@pytest.mark.parametrize("arguments, error, message", [
    ({"image": None}, "ImageError", "got NoneType"), ({"image": []}, "ImageError", "no image given"),
    ({"max_new_tokens": 0}, "AnswerError", "max_new_tokens must be a whole number of at least 1, got 0"),
    ({"max_answer_tokens": -1}, "AnswerError", "max_answer_tokens must be a whole number of at least 1, got -1"),
    ({"max_answer_tokens": 1.5}, "AnswerError", "got 1.5")])
def test_bad_arguments_are_one_glimpse_error(shipped, arguments, error, message):
    sample = world.make_sample(11)
    call = {"image": sample.image, **arguments}
    with pytest.raises(getattr(glimpse, error), match=message):
        glimpse.explain(shipped.model, shipped.processor, call.pop("image"), sample.question, **call)


def test_an_array_image_is_explained_as_its_picture(shipped):
    sample = world.make_sample(11)
    from_array = glimpse.explain(shipped.model, shipped.processor, np.asarray(sample.image), sample.question)
    from_picture = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question)
    assert from_array.answer == from_picture.answer
    np.testing.assert_allclose(from_array.visual, from_picture.visual, rtol=1e-5, atol=1e-7)


def test_an_image_mostly_cropped_away_by_the_processor_is_warned_and_noted(tiny_llava):
    model, processor = tiny_llava  # LLaVA-1.5's processor crops a centre square
    with pytest.warns(glimpse.InputWarning, match="kept 15% of image 0"):
        wide = glimpse.explain(model, processor, rand_image(400, 60), QUESTION, max_new_tokens=2)
    assert any("kept 15% of image 0" in n for n in wide.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.InputWarning)
        square = glimpse.explain(model, processor, rand_image(60, 60), QUESTION, max_new_tokens=2)
    assert not any("kept" in n for n in square.notes)


def test_the_model_is_recorded_by_its_name_and_loads_by_it(shipped, tiny_llava_dir):
    sample = world.make_sample(11)
    explanation = glimpse.explain(shipped.model, shipped.processor, sample.image, sample.question, max_new_tokens=2)
    assert explanation.model_id == "glimpse-toy" and "/" not in json.dumps(explanation.to_dict()["model_id"])
    assert glimpse.load("glimpse-toy", device="cpu").model.config.model_type == shipped.model.config.model_type
    local = glimpse.load(tiny_llava_dir, device="cpu")
    named = glimpse.explain(local.model, local.processor, rand_image(60, 60), QUESTION, max_new_tokens=2)
    assert named.model_id == tiny_llava_dir.name
