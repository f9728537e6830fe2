"""Where maps peak against the evidence: the classes and the batch report."""

import json

import numpy as np
import pytest

import glimpse
from batch_inputs import write_scenes
from glimpse.analysis.misalignment import CLASSES, classify, write_misalignment_report
from glimpse.batch import run
from glimpse.eval.metrics import token_cells


@pytest.fixture(scope="module")
def scene():
    from glimpse.toy import world

    loaded = glimpse.load(None, device="cpu")
    sample = next(s for s in world.make_dataset(20, 3) if len(s.objects) >= 2 and s.target is not None)
    explanation = glimpse.explain(loaded.model, loaded.processor, sample.image, sample.question)
    return sample, explanation


def test_the_peak_is_classified_by_what_its_cell_covers(scene):
    sample, explanation = scene
    evidence = sample.mask
    objects = sample.segmentation >= 0
    cells = token_cells(explanation.layouts[0])
    cover = np.array([[evidence[t:b, l:r].any(), (objects & ~evidence)[t:b, l:r].any(), objects[t:b, l:r].any()]
                      for t, l, b, r in cells])
    on_evidence, on_other, on_background = (int(np.flatnonzero(c)[0]) for c in
                                            (cover[:, 0], cover[:, 1] & ~cover[:, 0], ~cover[:, 2]))

    def peak_at(token, rest=0.0):
        scores = np.full(len(cells), rest, dtype=np.float32)
        scores[token] = 1.0
        explanation.visual = scores
    peak_at(on_evidence)
    assert classify(explanation, evidence, objects) == "aligned"
    peak_at(on_evidence, rest=0.9)  # the peak on the evidence, the mass everywhere
    assert classify(explanation, evidence, objects) == "right object, diffuse"
    peak_at(on_other)
    assert classify(explanation, evidence, objects) == "another object"
    assert classify(explanation, evidence) == "background"  # without an objects mask
    peak_at(on_background)
    assert classify(explanation, evidence, objects) == "background"


def test_the_report_counts_every_item_and_shows_the_worst(tmp_path):
    write_scenes(tmp_path / "in", 4)
    run(tmp_path / "in" / "items.jsonl", tmp_path / "batch", max_answer_tokens=2)
    page, data = write_misalignment_report(tmp_path / "batch", tmp_path / "report", worst=3)
    result = json.loads(data.read_text())
    assert sum(result["counts"].values()) == 4 and set(result["counts"]) == set(CLASSES)
    assert all(item["class"] in CLASSES for item in result["items"])
    assert page.read_text().count("<figure>") == 3


def test_records_without_ground_truth_are_refused_clearly(tmp_path):
    from glimpse.batch.store import Store
    from glimpse.errors import BatchError

    write_scenes(tmp_path / "in", 1)
    run(tmp_path / "in" / "items.jsonl", tmp_path / "batch", max_answer_tokens=1)
    store = Store(tmp_path / "batch")
    record = store.record("scene-0", "glimpse")
    del record["ground_truth"]
    store.write("scene-0", "glimpse", record, {})
    with pytest.raises(BatchError, match="does not name its ground truth"):
        write_misalignment_report(tmp_path / "batch", tmp_path / "report")
