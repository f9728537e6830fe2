"""The dataset loaders on fixtures in their published layouts, and what they say of an incomplete folder."""

import json

import numpy as np
import pytest
from PIL import Image

from dataset_layouts import write_gqa, write_vqa_hat, write_vqa_mhug
from glimpse.batch.items import read_items
from glimpse.eval.datasets import DatasetError, prepare
from glimpse.toy import world


def test_vqa_hat_averages_the_annotators_maps_at_the_images_size(tmp_path):
    truth = write_vqa_hat(tmp_path / "hat")
    prepared = prepare("vqa-hat", tmp_path / "hat", tmp_path / "data")
    items = read_items(prepared.items)
    assert prepared.count == 3 and prepared.left_out == {"maps of questions not in the questions file": 1}
    assert [item.id for item in items] == [f"vqahat-{qid}" for qid in sorted(truth)]
    for item in items:
        expected = truth[int(item.id.removeprefix("vqahat-"))]
        assert item.question == expected["question"] and item.expected_answer == expected["answer"]
        assert item.images[0].name == f"COCO_val2014_{expected['image_id']:012d}.jpg"
        with Image.open(item.attention_map) as picture:
            written = np.asarray(picture, dtype=np.float64)
        mean = np.mean([np.asarray(Image.fromarray(m.astype(np.float32)).resize((world.SIZE, world.SIZE),
                                                                                 Image.BILINEAR)) for m in expected["maps"]],
                       axis=0)
        assert written.shape == (world.SIZE, world.SIZE)
        np.testing.assert_allclose(written, np.round(mean / mean.max() * 255), atol=1)
    assert prepare("vqa-hat", tmp_path / "hat", tmp_path / "data", limit=2).count == 2


def test_vqa_hat_names_every_missing_part_and_where_it_is_published(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError) as caught:
        prepare("vqa-hat", tmp_path / "empty", tmp_path / "data")
    message = str(caught.value)
    for part in ("vqahat_val", "OpenEnded_mscoco_val2014_questions.json", "val2014", "abhishekdas.com/vqa-hat",
                 "visualqa.org", "cocodataset.org"):
        assert part in message
    write_vqa_hat(tmp_path / "hat")
    with pytest.raises(DatasetError, match="vqahat_train"):  # the train maps are another archive
        prepare("vqa-hat", tmp_path / "hat", tmp_path / "data", split="train")


def test_vqa_mhug_counts_image_fixations_and_sums_word_durations(tmp_path):
    truth = write_vqa_mhug(tmp_path / "mhug")
    prepared = prepare("vqa-mhug", tmp_path / "mhug", tmp_path / "data")
    items = {item.id: item for item in read_items(prepared.items)}
    assert sorted(items) == ["mhug-300", "mhug-400"]
    with Image.open(items["mhug-300"].fixations) as picture:
        counts = np.asarray(picture.convert("F"))
    assert counts.shape == (world.SIZE, world.SIZE) and counts.sum() == 3  # the point at x = 10000 is outside
    assert counts[20, 10] == 2 and counts[5, 50] == 1
    words = len(truth[300]["question"].split())
    assert items["mhug-300"].question_fixations == (120.0, 0.0, 120.0) + (0.0,) * (words - 3)
    assert items["mhug-400"].question_fixations is None and items["mhug-400"].expected_answer is None


def test_vqa_mhug_refuses_word_fixations_beyond_the_question(tmp_path):
    write_vqa_mhug(tmp_path / "mhug")
    table = tmp_path / "mhug" / "gaze" / "text_fixations.csv"
    table.write_text(table.read_text() + "300,p2,40,10\n")
    with pytest.raises(DatasetError, match="counted from 0"):
        prepare("vqa-mhug", tmp_path / "mhug", tmp_path / "data")
    table.write_text("question_id,participant,duration\n300,p1,4\n")
    with pytest.raises(DatasetError, match="no column word"):
        prepare("vqa-mhug", tmp_path / "mhug", tmp_path / "data")


def test_gqa_evidence_is_the_union_of_the_referenced_boxes(tmp_path):
    questions = write_gqa(tmp_path / "gqa")
    prepared = prepare("gqa", tmp_path / "gqa", tmp_path / "data")
    items = read_items(prepared.items)
    assert [item.id for item in items] == ["gqa-201", "gqa-1000"]  # question-id order; "30" refers to no object
    assert prepared.left_out == {"questions referring to no object of their scene graph": 1}
    masks = [np.asarray(Image.open(item.mask)) > 0 for item in items]
    thing = np.zeros((world.SIZE, world.SIZE), bool)
    thing[3:8, 2:12] = True
    other = np.zeros_like(thing)
    other[30:34, 30:34] = True
    np.testing.assert_array_equal(masks[0], thing | other)  # the question's object and the full answer's
    np.testing.assert_array_equal(masks[1], other)
    np.testing.assert_array_equal(np.asarray(Image.open(items[1].objects)) > 0, thing | other)
    assert items[0].expected_answer == questions["201"]["answer"]


def test_a_prepared_folder_is_reused_for_the_same_arguments_only(tmp_path):
    write_gqa(tmp_path / "gqa")
    first = prepare("gqa", tmp_path / "gqa", tmp_path / "data")
    stamp = first.items.stat().st_mtime_ns
    assert prepare("gqa", tmp_path / "gqa", tmp_path / "data").items.stat().st_mtime_ns == stamp
    assert prepare("gqa", tmp_path / "gqa", tmp_path / "data", limit=1).count == 1
    record = json.loads((tmp_path / "data" / "prepared.json").read_text())
    assert record["stamp"]["limit"] == 1 and record["count"] == 1


def test_bad_names_and_roots_are_one_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="known: toy, items, vqa-hat"):
        prepare("coco", tmp_path, tmp_path / "data")
    with pytest.raises(DatasetError, match="give its root folder"):
        prepare("gqa", None, tmp_path / "data")
    with pytest.raises(DatasetError, match="does not exist"):
        prepare("gqa", tmp_path / "nowhere", tmp_path / "data")
    with pytest.raises(DatasetError, match="split must be one of"):
        prepare("gqa", tmp_path, tmp_path / "data", split="test")
    (tmp_path / "gqa" / "images").mkdir(parents=True)
    (tmp_path / "gqa" / "val_balanced_questions.json").write_text("{}")
    (tmp_path / "gqa" / "val_sceneGraphs.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        prepare("gqa", tmp_path / "gqa", tmp_path / "data")
    (tmp_path / "gqa" / "val_sceneGraphs.json").write_text("{}")
    with pytest.raises(DatasetError, match="holds no item"):
        prepare("gqa", tmp_path / "gqa", tmp_path / "data")
