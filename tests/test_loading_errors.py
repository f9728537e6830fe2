"""glimpse.load on a local model folder that is incomplete or damaged, and on a device that is
unknown or missing: one ModelLoadError saying what is wrong with the folder or the device, never the
hub's advice to download the model (the folder is what was given)."""

import json
import shutil

import pytest
import torch

import glimpse
from glimpse.errors import InputWarning


@pytest.fixture
def folder(tiny_llava_dir, tmp_path):
    """A copy of the saved tiny LLaVA, to damage."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_llava_dir, copy)
    return copy


def load_fails(folder, match):
    with pytest.raises(glimpse.ModelLoadError, match=match) as caught:
        glimpse.load(folder, device="cpu")
    assert "network access" not in str(caught.value) and "cache" not in str(caught.value)
    assert str(folder) in str(caught.value)
    return str(caught.value)


def test_a_folder_without_weights(folder):
    (folder / "model.safetensors").unlink()
    load_fails(folder, "has no weights: none of model.safetensors, .*pytorch_model.bin.* is in it")


@pytest.mark.parametrize("damage", [lambda data: b"not a safetensors file" * 4, lambda data: data[: len(data) // 3]])
def test_a_corrupt_or_truncated_weights_file(folder, damage):
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    load_fails(folder, r"is damaged: its weights cannot be read, the file is damaged or incomplete \(.*header")


def test_weights_of_other_shapes_than_the_config(folder):
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(hidden_size=64, intermediate_size=128)
    (folder / "config.json").write_text(json.dumps(config))
    load_fails(folder, "its weights do not match its config.json: parameters of other shapes")


def test_weights_lacking_parameters_of_the_config_are_warned_about(folder):
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] += 1
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(InputWarning, match=r"lack 9 parameter\(s\) its config.json asks for .*layers\.2\..*start "
                                          "random"):
        model, _ = glimpse.load(folder, device="cpu")
    assert model.config.text_config.num_hidden_layers == 3


def test_a_folder_without_tokenizer_files(folder):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    load_fails(folder, r"it has no tokenizer files \(tokenizer.json.*\); save the model's processor into it too")


def test_a_folder_without_processor_settings(folder):
    for path in folder.glob("*process*config.json"):
        path.unlink()
    load_fails(folder, r"it has no image processor settings \(processor_config.json or preprocessor_config.json\)")


def test_a_config_that_is_not_json(folder):
    (folder / "config.json").write_text("{not json")
    load_fails(folder, r"its config.json cannot be read \(.*not a valid JSON file\)")


def test_a_good_folder_warns_nothing(tiny_llava_dir):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", glimpse.GlimpseWarning)
        glimpse.load(tiny_llava_dir, device="cpu")


# --- devices: refused before any file is read -----------------------------------------------------

@pytest.fixture
def unreadable(tmp_path):
    """A folder that would fail to load: only a device error can come before that."""
    (tmp_path / "config.json").write_text("{not json")
    return tmp_path


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_a_machine_without_it(unreadable, device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(glimpse.ModelLoadError, match=f"device '{device}' needs a CUDA GPU, but .*; use device 'cpu'"):
        glimpse.load(unreadable, device=device)


def test_a_gpu_index_past_the_last(unreadable, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(glimpse.ModelLoadError, match=r"device 'cuda:3': this machine has 1 CUDA GPU\(s\), cuda:0 to "
                                                     "cuda:0"):
        glimpse.load(unreadable, device="cuda:3")


@pytest.mark.parametrize("device", ["gpu3", "", "cuda:x"])
def test_an_unknown_device_name(unreadable, device):
    with pytest.raises(glimpse.ModelLoadError, match=f"unknown device '{device}': use auto, cpu, cuda, cuda:N"):
        glimpse.load(unreadable, device=device)


def test_cpu_and_auto_are_accepted():
    from glimpse.loading import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
