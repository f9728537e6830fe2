"""The batch output folder: safe item names, atomic writes, the manifest check."""

import json
import os
import time

import pytest

from glimpse.batch.store import TEMPORARY, Store, item_key, write_atomic
from glimpse.errors import BatchError

MANIFEST = {"schema": "glimpse.batch", "model": "m", "revision": None, "dtype": "float32", "methods": ["glimpse"],
            "options": {"glimpse": {"head_lambda": 0.5}}, "max_new_tokens": 32, "max_answer_tokens": None}


@pytest.mark.parametrize("item_id", ["../../x", "/etc/passwd", "..", ".", "a/../../b", "C:\\x", "~root", "\x00",
                                     "x" * 500, "é/ü", " "])
def test_item_names_never_leave_the_output_folder(tmp_path, item_id):
    store = Store(tmp_path / "out")
    key = item_key(item_id)
    assert key and "/" not in key and "\\" not in key and not key.startswith(".") and len(key) <= 73
    store.write(item_id, "glimpse", {"id": item_id, "method": "glimpse", "status": "done", "ordinal": 0},
                {"glimpse.safetensors": b"x"})
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all((tmp_path / "out" / "items") in p.parents for p in written) and len(written) == 2
    assert store.record(item_id, "glimpse")["id"] == item_id


def test_ids_that_differ_only_in_dropped_characters_stay_apart():
    assert len({item_key(i) for i in ("a/b", "a_b", "a b", "a.b", "a//b")}) == 5


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_a_killed_writers_temporary_files_are_swept(tmp_path):
    store = Store(tmp_path)
    folder = store.item_folder("a")
    (folder / f"glimpse.json{TEMPORARY}123-ab").write_text("half")
    stale, fresh = tmp_path / f"results.parquet{TEMPORARY}1-x", tmp_path / f"manifest.json{TEMPORARY}2-y"
    stale.write_text("old")
    fresh.write_text("another shard writing")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    Store(tmp_path)
    assert not stale.exists() and fresh.exists()  # a recent one may be another shard's, still being written
    store.write("a", "glimpse", {"id": "a", "method": "glimpse", "status": "done", "ordinal": 0}, {})
    assert sorted(p.name for p in folder.iterdir()) == ["glimpse.json"]


def test_a_folder_of_other_settings_is_refused_unless_forced(tmp_path):
    store = Store(tmp_path)
    assert store.claim(MANIFEST, force=False) == []
    assert store.claim({**MANIFEST, "glimpse_version": "9", "input_checksum": "x"}, force=False) == []  # not settings
    other = {**MANIFEST, "methods": ["glimpse", "rollout"], "options": {"glimpse": {"head_lambda": 0.7}}}
    with pytest.raises(BatchError, match=r'options.glimpse.head_lambda: 0.5 before, 0.7 now.*force') as caught:
        store.claim(other, force=False)
    assert 'methods: ["glimpse"] before, ["glimpse", "rollout"] now' in str(caught.value)
    assert json.loads((tmp_path / "manifest.json").read_text())["methods"] == ["glimpse"]
    assert len(store.claim(other, force=True)) == 2
    assert store.manifest()["methods"] == ["glimpse", "rollout"]


def test_damaged_records_are_not_counted_as_finished(tmp_path):
    store = Store(tmp_path)
    store.write("a", "glimpse", {"id": "a", "method": "glimpse", "status": "done", "ordinal": 0}, {})
    store.record_path("a", "glimpse").write_text("{not json")
    assert store.record("a", "glimpse") is None and store.records() == []
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(BatchError, match="damaged"):
        store.manifest()
