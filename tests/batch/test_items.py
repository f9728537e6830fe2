"""Reading batch inputs: every format gives the same items; malformed rows are named by line."""

import csv
import json

import pytest
from PIL import Image

from batch_inputs import write_jsonl, write_scenes
from glimpse.batch.items import checksum, in_shard, parse_shard, read_items
from glimpse.errors import BatchError


def fields(items):
    return [(i.id, [str(p) for p in i.images], i.question, i.answer, i.mask, i.box, i.fixations, i.expected_answer,
             i.ordinal) for i in items]


@pytest.fixture
def scenes(tmp_path):
    rows = write_scenes(tmp_path / "in", 4)
    rows[1]["answer"] = "the cross is red."
    rows[1]["fixations"] = "mask_1.png"
    rows[2] = {**{k: v for k, v in rows[2].items() if k != "mask"}, "box": [10, 20, 60, 80]}
    rows[3]["images"] = [rows[3].pop("image"), "scene_0.png"]
    write_jsonl(tmp_path / "in" / "items.jsonl", rows)
    return tmp_path / "in", rows


def test_jsonl_rows_resolve_paths_relative_to_the_file(scenes, tmp_path):
    folder, rows = scenes
    items = read_items(folder / "items.jsonl")
    assert [i.id for i in items] == [r["id"] for r in rows] and [i.ordinal for i in items] == [0, 1, 2, 3]
    assert items[0].images == [(folder / "scene_0.png").resolve()] and items[0].mask == (folder / "mask_0.png").resolve()
    assert items[1].fixations == (folder / "mask_1.png").resolve() and items[0].fixations is None
    assert items[0].expected_answer == rows[0]["expected_answer"]
    assert items[1].answer == "the cross is red." and items[2].box == (10.0, 20.0, 60.0, 80.0) and items[2].mask is None
    assert items[3].images == [(folder / "scene_3.png").resolve(), (folder / "scene_0.png").resolve()]


def test_csv_parquet_folder_and_saved_dataset_give_the_same_items(scenes, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    folder, rows = scenes
    expected = fields(read_items(folder / "items.jsonl"))
    names = ["id", "image", "images", "question", "answer", "mask", "box", "fixations", "expected_answer"]
    with open(folder / "items.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, names, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    table_rows = [{name: row.get(name) for name in names} for row in rows]
    pq.write_table(pa.Table.from_pylist(table_rows), folder / "items.parquet")
    assert fields(read_items(folder / "items.csv")) == expected
    assert fields(read_items(folder / "items.parquet")) == expected
    Dataset.from_list(table_rows).save_to_disk(str(folder / "saved"))
    saved = [(i, [p.name for p in images], *rest) for i, images, *rest in
             [(x.id, x.images, x.question, x.answer, x.box) for x in read_items(folder / "saved")]]
    assert [s[0] for s in saved] == [r["id"] for r in rows] and saved[3][1] == ["scene_3.png", "scene_0.png"]
    # A folder of images with a questions file: ids may be left out, the image path names the row.
    write_jsonl(folder / "questions.jsonl", [{"image": "scene_0.png", "question": "what is it?"}])
    (item,) = read_items(folder)
    assert item.id == "scene_0" and item.images == [(folder / "scene_0.png").resolve()]


def test_a_saved_dataset_with_image_features_keeps_the_images_in_memory(tmp_path):
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    pictures = [Image.new("RGB", (20, 10), (i * 40, 0, 0)) for i in range(2)]
    features = Features({"question_id": Value("int64"), "image": ImageFeature(), "question": Value("string")})
    Dataset.from_dict({"question_id": [7, 8], "image": pictures, "question": ["a?", "b?"]},
                      features=features).save_to_disk(str(tmp_path / "ds"))
    items = read_items(tmp_path / "ds")
    assert [i.id for i in items] == ["7", "8"]
    assert isinstance(items[1].images[0], Image.Image) and items[1].images[0].getpixel((0, 0)) == (40, 0, 0)
    assert items[0].image_sources() == ["<in memory: ds row 1>"]


def test_malformed_rows_are_reported_with_their_line_numbers(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "image": "x.png", "question": "q?"}\n'
                    "\n"
                    "not json\n"
                    '{"id": "b", "image": "x.png"}\n'
                    '{"image": "x.png", "question": "q?"}\n'
                    '{"id": "c", "image": "x.png", "question": "q?", "box": [5, 5, 1, 9]}\n'
                    '{"id": "a", "image": "x.png", "question": "q?"}\n'
                    '[1, 2]\n'
                    '{"id": "d", "image": "x.png", "question": "two words", "question_fixations": [1]}\n'
                    '{"id": "e", "image": "x.png", "question": "two words", "question_fixations": [1, -2]}\n'
                    '{"id": "f", "image": "x.png", "question": "two words", "question_fixations": ["a", 1]}\n')
    with pytest.raises(BatchError) as caught:
        read_items(path)
    message = str(caught.value)
    assert message.startswith("9 malformed row(s)")
    for expected in ("line 9: question_fixations needs one non-negative number per word of the question (2), got 1",
                     "line 10: question_fixations needs one non-negative number per word of the question (2), got 2 "
                     "with negative values", "line 11: question_fixations must be a list of numbers"):
        assert expected in message
    for expected in ("line 3: not JSON", "line 4: no question", "line 5: no id", "line 6: box must be",
                     "line 7: id 'a' is used already (items.jsonl line 1)", "line 8: not a JSON object"):
        assert expected in message


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), ("", "holds no items"), ("x", "not JSON")])
def test_unusable_inputs_are_refused(tmp_path, content, message):
    path = tmp_path / "items.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BatchError, match=message):
        read_items(path)
    (tmp_path / "items.txt").write_text("x")
    with pytest.raises(BatchError, match=r"\.jsonl, \.csv, \.parquet"):
        read_items(tmp_path / "items.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchError, match="no questions file"):
        read_items(tmp_path / "empty")


def test_shards_split_the_items_by_id_and_keep_them_when_the_input_grows():
    ids = [f"item-{i}" for i in range(200)]
    shards = [[i for i in ids if in_shard(i, (k, 3))] for k in range(3)]
    assert sorted(sum(shards, [])) == sorted(ids) and all(40 < len(s) < 90 for s in shards)
    more = [f"item-{i}" for i in range(400)]
    assert [i for i in more[:200] if in_shard(i, (1, 3))] == shards[1]
    assert parse_shard("2/4") == (2, 4)
    for text in ("4/4", "-1/2", "a/b", "3"):
        with pytest.raises(BatchError):
            parse_shard(text)


def test_checksum_changes_with_the_content(tmp_path):
    path = write_jsonl(tmp_path / "items.jsonl", [{"id": "a"}])
    first = checksum(path)
    assert first == checksum(path) and first.startswith("sha256:")
    write_jsonl(path, [{"id": "b"}])
    assert checksum(path) != first
