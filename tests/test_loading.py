"""glimpse.load: local folders, hub ids offline, clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch

import glimpse


def test_load_local_folder(tiny_llava_dir, tiny_llava):
    model, processor = glimpse.load(tiny_llava_dir, device="cpu")
    assert type(model).__name__ == "LlavaForConditionalGeneration" and model.dtype == torch.float32
    assert not model.training
    reference, _ = tiny_llava
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name


def test_load_dtype(tiny_llava_dir):
    model, _ = glimpse.load(tiny_llava_dir, device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(glimpse.ModelLoadError, match="unknown dtype"):
        glimpse.load(tiny_llava_dir, device="cpu", dtype="float8")


def test_bf16_model_explains_close_to_float32(tiny_llava_dir):
    from tiny_models import rand_image

    image = rand_image(64, 48)
    results = []
    for dtype in ("float32", "bfloat16"):
        model, processor = glimpse.load(tiny_llava_dir, device="cpu", dtype=dtype)
        results.append(glimpse.explain(model, processor, image, "what color is the object?", answer=" a red"))
    a, b = (r.visual for r in results)
    assert results[1].visual.dtype == a.dtype
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_missing_folder(tmp_path):
    with pytest.raises(glimpse.ModelLoadError, match="does not exist"):
        glimpse.load(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(glimpse.ModelLoadError, match="no config.json"):
        glimpse.load(tmp_path)


def test_hub_id_not_available_offline():
    with pytest.raises(glimpse.ModelLoadError, match="offline"):
        glimpse.load("someone/definitely-not-cached-vlm")


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(glimpse.UnsupportedModelError, match="LlavaForConditionalGeneration"):
        glimpse.load(tmp_path)


def test_device_map_auto_loads_and_explains(tiny_llava_dir):
    from tiny_models import rand_image

    model, processor = glimpse.load(tiny_llava_dir, device_map="auto")
    result = glimpse.explain(model, processor, rand_image(64, 48), "what color is the object?", answer=" a red")
    assert np.isfinite(result.visual).all() and result.visual.shape == (16,)


def test_a_hub_id_loads_from_the_cache_offline_and_is_recorded_with_its_commit(tiny_llava_dir, tmp_path):
    """As a user with a filled hub cache and no network: the id is kept, and the commit it resolved to."""
    from cli_runs import run_process
    from glimpse.toy import world

    commit = "89abcdef" * 5
    repo = tmp_path / "hub" / "models--glimpse-test--tiny-llava"
    shutil.copytree(tiny_llava_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    world.make_sample(3).image.save(tmp_path / "scene.png")
    done = run_process("explain", "-m", "glimpse-test/tiny-llava", "-i", "scene.png", "-p", "what color is it?",
                       "-a", " red", "-o", "out", cwd=tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "out" / "explanation.json").read_text())
    assert (saved["model_id"], saved["model_revision"]) == ("glimpse-test/tiny-llava", commit)
    assert f"glimpse-test/tiny-llava @ {commit[:12]}" in (tmp_path / "out" / "report.html").read_text()
