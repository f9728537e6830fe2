"""A batch run killed with SIGKILL at random moments, 20 times in a row, then finished, holds every
item exactly once and the same table as an uninterrupted run."""

import random
import signal
import subprocess
import sys
import time

import numpy as np

from batch_inputs import write_scenes
from glimpse.batch import load_explanation, read_table, run
from glimpse.batch.store import ITEMS, TEMPORARY

ITEMS_COUNT = 40
KILLS = 20
# Explaining the first answer tokens only keeps the 22 runs short; resuming is what is tested.
OPTIONS = ["--max-answer-tokens", "2"]
COMPARED = ("ordinal", "id", "method", "status", "error", "question", "answer", "answer_generated", "answer_tokens",
            "pointing_game", "notes", "arrays", "options")


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    items = tmp_path / "in" / "items.jsonl"
    write_scenes(tmp_path / "in", ITEMS_COUNT)
    reference = run(items, tmp_path / "reference", max_answer_tokens=2)
    assert reference.done == ITEMS_COUNT
    command = [sys.executable, "-m", "glimpse.cli", "batch", "-i", str(items), "-o", str(tmp_path / "out"), *OPTIONS]
    rng = random.Random(20261201)
    kills = 0
    for _ in range(KILLS):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= KILLS // 2  # most runs really were killed, not finished
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "failed" in finished.stdout and "table:" in finished.stdout  # its summary

    records = sorted((tmp_path / "out" / ITEMS).glob("*/*.json"))
    assert len(records) == ITEMS_COUNT
    assert not [p for p in (tmp_path / "out" / ITEMS).rglob(f"*{TEMPORARY}*")]
    table, expected = (read_table(folder).to_pylist() for folder in (tmp_path / "out", tmp_path / "reference"))
    assert [row["id"] for row in table] == [f"scene-{i}" for i in range(ITEMS_COUNT)]
    for got, want in zip(table, expected):
        assert {k: got[k] for k in COMPARED} == {k: want[k] for k in COMPARED}
        np.testing.assert_allclose(got["token_weights"], want["token_weights"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got["energy_in_mask"], want["energy_in_mask"], rtol=1e-4, atol=1e-6)
        maps = [load_explanation(folder, got["id"], "glimpse") for folder in (tmp_path / "out", tmp_path / "reference")]
        np.testing.assert_allclose(maps[0].token_visual, maps[1].token_visual, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(maps[0].token_prompt, maps[1].token_prompt, rtol=1e-4, atol=1e-6)
