"""The ray engine on a local Ray instance (2 CPUs, 2 model replicas): the same records and table
as the local engine, and the same resume."""

import numpy as np
import pytest

from batch_inputs import write_scenes
from glimpse.batch import load_explanation, read_table, run

COMPARED = ("ordinal", "id", "method", "status", "error", "answer", "answer_tokens", "pointing_game", "arrays", "options")


@pytest.fixture(scope="module")
def local_ray():
    import ray  # part of the test install (pyproject's test extra): CI runs this test, never skips it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_the_ray_engine_writes_what_the_local_engine_writes(local_ray, tmp_path):
    items = tmp_path / "in" / "items.jsonl"
    write_scenes(tmp_path / "in", 6)
    options = dict(methods=["glimpse", "rollout"], max_answer_tokens=3)
    local = run(items, tmp_path / "local", **options)
    seen = []
    distributed = run(items, tmp_path / "ray", engine="ray", workers=2, progress=lambda done, total: seen.append(done),
                      **options)
    assert (local.done, distributed.done, distributed.failed) == (6, 6, 0) and seen == list(range(1, 7))
    expected, got = read_table(tmp_path / "local").to_pylist(), read_table(tmp_path / "ray").to_pylist()
    assert [{k: r[k] for k in COMPARED} for r in got] == [{k: r[k] for k in COMPARED} for r in expected]
    for row, want in zip(got, expected):
        np.testing.assert_allclose(row["token_weights"], want["token_weights"], rtol=1e-4, atol=1e-6)
        maps = [load_explanation(tmp_path / folder, row["id"], row["method"]).token_visual for folder in ("local", "ray")]
        np.testing.assert_allclose(maps[1], maps[0], rtol=1e-4, atol=1e-6)
    again = run(items, tmp_path / "ray", engine="ray", workers=2, **options)
    assert (again.done, again.skipped) == (0, 6)


def test_a_missing_ray_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from glimpse.errors import BatchError

    write_scenes(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BatchError, match=r"pip install 'glimpse-lvlm\[ray\]'"):
        run(tmp_path / "in" / "items.jsonl", tmp_path / "out", engine="ray")
