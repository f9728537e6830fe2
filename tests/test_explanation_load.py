"""Explanation.load on tampered folders: every problem is one ExplanationError naming the field and the folder."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import glimpse
from glimpse import Explanation, ExplanationError
from tiny_models import rand_image

QUESTION = "what color is the object?"
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def saved(tiny_llava, tmp_path_factory):
    model, processor = tiny_llava
    explanation = glimpse.explain(model, processor, rand_image(90, 60, seed=3), QUESTION, answer=" a red circle")
    folder = tmp_path_factory.mktemp("saved") / "e"
    explanation.save(folder, figures=False)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(saved, folder)
    return folder


def edit_document(folder, change):
    path = folder / "explanation.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def edit_arrays(folder, change):
    arrays = load_file(str(folder / "arrays.safetensors"))
    change(arrays)
    save_file(arrays, str(folder / "arrays.safetensors"))


def refused(folder, field):
    with pytest.raises(ExplanationError) as caught:
        Explanation.load(folder)
    message = str(caught.value)
    assert type(caught.value) is ExplanationError and isinstance(caught.value, glimpse.GlimpseError)
    assert field in message, message
    assert str(folder) in message, message
    assert "\n" not in message
    return message


def tile(doc, image=0, number=0):
    return doc["images"][image]["layout"]["tiles"][number]


def set_key(key, value):
    return lambda doc: doc.update({key: value})


DOCUMENT_TAMPERING = {
    "a missing key": (lambda doc: doc.pop("answer_tokens"), "`answer_tokens` is missing"),
    "a missing v2 key": (lambda doc: doc.pop("ranking_by"), "`ranking_by` is missing"),
    "a string schema version": (set_key("schema_version", "2"), "`schema_version`"),
    "a boolean schema version": (set_key("schema_version", True), "`schema_version`"),
    "a newer schema version": (set_key("schema_version", 3), "schema version 1 to 2"),
    "another schema": (set_key("schema", "something.else"), "`schema`"),
    "a string where a boolean belongs": (set_key("question_located", "yes"), "`question_located`"),
    "a list where an object belongs": (set_key("params", []), "`params`"),
    "a number for the model revision": (set_key("model_revision", 7), "`model_revision`"),
    "a number among the answer tokens": (lambda doc: doc["answer_tokens"].__setitem__(1, 7), "`answer_tokens[1]`"),
    "answer ids of another length": (lambda doc: doc["answer_token_ids"].pop(), "`answer_token_ids`"),
    "a word index past the prompt words": (lambda doc: doc["word_of_token"].__setitem__(-1, 99), "`word_of_token[5]`"),
    "a negative word index": (lambda doc: doc["word_of_token"].__setitem__(0, -1), "`word_of_token[0]`"),
    "a text word index": (lambda doc: doc["word_of_token"].__setitem__(0, "0"), "`word_of_token[0]`"),
    "fewer word indices than prompt scores": (lambda doc: doc["word_of_token"].pop(), "`token_prompt`"),
    "a details value that is no text": (lambda doc: doc["details"].update(gamma=1), "`details.gamma`"),
    "a details name without its array": (lambda doc: doc["details"].update(nothing="x"), "`details.nothing`"),
    "notes that are no list": (set_key("notes", "none"), "`notes`"),
    "a cost that is no object": (set_key("cost", 3), "`cost`"),
    "no images list": (set_key("images", {}), "`images`"),
    "an image without a file": (lambda doc: doc["images"][0].pop("file"), "`images[0].file`"),
    "a layout width that is text": (lambda doc: doc["images"][0]["layout"].update(width="90"),
                                    "`images[0].layout.width`"),
    "a zero layout height": (lambda doc: doc["images"][0]["layout"].update(height=0), "`images[0].layout.height`"),
    "an unknown positions axis": (lambda doc: doc["images"][0]["layout"].update(positions_axis="elsewhere"),
                                  "`images[0].layout.positions_axis`"),
    "a tile with too few positions": (lambda doc: tile(doc)["positions"].pop(), "`images[0].layout.tiles[0].positions`"),
    "a negative position": (lambda doc: tile(doc)["positions"].__setitem__(2, -4),
                            "`images[0].layout.tiles[0].positions[2]`"),
    "a zero-size box": (lambda doc: tile(doc).update(box=[10, 0, 10, 60]), "`images[0].layout.tiles[0].box`"),
    "a box of three numbers": (lambda doc: tile(doc).update(box=[0, 0, 90]), "`images[0].layout.tiles[0].box`"),
    "a grid smaller than the arrays' image tokens": (
        lambda doc: tile(doc).update(rows=3, positions=tile(doc)["positions"][:12]), "`token_visual`"),
    "an image file outside the folder": (lambda doc: doc["images"][0].update(file="../../etc/passwd"),
                                         "`images[0].file`"),
    "an absolute image file": (lambda doc: doc["images"][0].update(file="/etc/passwd"), "`images[0].file`"),
    "the folder itself as the image": (lambda doc: doc["images"][0].update(file="."), "`images[0].file`"),
    "a missing image file": (lambda doc: doc["images"][0].update(file="image_7.png"), "`images[0].file`"),
    "an arrays file outside the folder": (set_key("arrays", "../arrays.safetensors"), "`arrays`"),
}


@pytest.mark.parametrize("name", DOCUMENT_TAMPERING)
def test_a_tampered_document_is_one_error_naming_the_field(copy, name):
    change, field = DOCUMENT_TAMPERING[name]
    if name == "an arrays file outside the folder":  # it exists: only the check keeps it from being read
        shutil.copy(copy / "arrays.safetensors", copy.parent / "arrays.safetensors")
    edit_document(copy, change)
    refused(copy, field)


@pytest.mark.parametrize("text,field", [
    ("{not json", "`explanation.json` is not valid JSON"),
    ("[1, 2]", "`explanation.json` is a list, not an object"),
    ('"\udcff"', "`explanation.json`"),
])
def test_a_document_that_is_no_json_object_is_one_error(copy, text, field):
    (copy / "explanation.json").write_text(text, errors="surrogateescape")
    refused(copy, field)


def drop(name):
    return lambda arrays: arrays.pop(name)


def replace(name, make):
    return lambda arrays: arrays.update({name: make(arrays[name])})


ARRAY_TAMPERING = {
    "a missing core array": (drop("token_visual"), "`token_visual`"),
    "a missing details array": (drop("details.gamma"), "`details.gamma`"),
    "a map one token short": (replace("visual", lambda a: a[:-1]), "`visual`"),
    "per-token scores for another answer length": (replace("token_prompt", lambda a: a[:2]), "`token_prompt`"),
    "a flattened matrix": (replace("token_visual", lambda a: a.reshape(-1)), "`token_visual`"),
    "probabilities of another type": (replace("probs", lambda a: a.astype(np.float64)), "`probs`"),
    "a ranking of another length": (replace("ranking", lambda a: np.concatenate([a, a])), "`ranking`"),
}


@pytest.mark.parametrize("name", ARRAY_TAMPERING)
def test_tampered_arrays_are_one_error_naming_the_array(copy, name):
    change, field = ARRAY_TAMPERING[name]
    edit_arrays(copy, change)
    refused(copy, field)


def test_a_file_that_is_no_safetensors_is_one_error(copy):
    (copy / "arrays.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    refused(copy, "`arrays`")


def test_an_image_that_is_no_image_or_not_its_layouts_size_is_one_error(copy):
    (copy / "image_0.png").write_text("not a picture")
    refused(copy, "`images[0].file`")
    rand_image(40, 30, seed=1).save(copy / "image_0.png")
    assert "40 x 30" in refused(copy, "`images[0].file`")


def test_an_image_file_linked_out_of_the_folder_is_refused(copy, tmp_path):
    outside = tmp_path / "elsewhere.png"
    shutil.move(copy / "image_0.png", outside)
    os.symlink(outside, copy / "image_0.png")
    refused(copy, "`images[0].file`")


def test_a_tampered_version_1_folder_is_one_error(tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(FIXTURES / "explanation-v1-glimpse", folder)
    assert Explanation.load(folder).method == "glimpse"
    edit_document(folder, lambda doc: doc["word_of_token"].__setitem__(0, 5))
    refused(folder, "`word_of_token[0]`")
    edit_document(folder, lambda doc: doc["word_of_token"].__setitem__(0, 0))
    edit_arrays(folder, drop("beta_visual"))
    refused(folder, "`beta_visual`")


def test_from_document_checks_a_document_without_a_folder(saved):
    doc = json.loads((saved / "explanation.json").read_text())
    arrays = load_file(str(saved / "arrays.safetensors"))
    images = [rand_image(90, 60, seed=3)]
    assert Explanation.from_document(doc, arrays, images).answer_tokens == [" a", " red", " circle"]
    doc["word_of_token"][0] = 42
    with pytest.raises(ExplanationError, match=r"damaged explanation in the given document: `word_of_token\[0\]`"):
        Explanation.from_document(doc, arrays, images)
    doc["word_of_token"][0] = 0
    assert Explanation.from_document(doc, arrays, []).images == []  # batch analyses that need no pictures pass none
    del arrays["probs"]
    with pytest.raises(ExplanationError, match="in batch/x.json: `probs` is missing"):
        Explanation.from_document(doc, arrays, images, source="batch/x.json")


def test_the_untampered_folder_still_loads_and_saves_again(saved, tmp_path):
    loaded = Explanation.load(saved)
    loaded.save(tmp_path / "again", figures=False)
    again = Explanation.load(tmp_path / "again")
    for name in ("token_visual", "visual", "token_prompt", "prompt", "token_weights", "probs", "ranking"):
        np.testing.assert_array_equal(getattr(again, name), getattr(loaded, name))
    assert again.layouts == loaded.layouts and again.word_of_token == loaded.word_of_token
