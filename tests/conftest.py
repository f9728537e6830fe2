"""Shared pytest setup: offline hub, tiny random LLaVA fixtures.

Import-cheap on purpose: torch / transformers are only imported when a fixture is first used.
Test modules (also in sub-folders) can ``import tiny_models`` and ``import reference``: this folder is put on
``sys.path`` below.
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

# Never touch the model hub from tests. Set before transformers / huggingface_hub are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from parallel kernels, and on a busy 2-core machine the extra thread
    mostly spins (measured here: a 50 x 32 linear layer ~5 us on one thread, ~1.5 ms CPU on two)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_llava():
    """(model, processor): random tiny LLaVA-1.5, seed 0, float32, eval, eager attention. Do not mutate it."""
    from tiny_models import build_tiny_llava

    return build_tiny_llava(seed=0)


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory):
    """A folder with a saved tiny LLaVA (seed 0): loadable by AutoProcessor / AutoModelForImageTextToText offline."""
    from tiny_models import save_tiny_llava

    folder = tmp_path_factory.mktemp("tiny_llava")
    save_tiny_llava(folder, seed=0)
    return folder


def pytest_configure(config):
    config.addinivalue_line("markers", "every_path: run the test once per GLIMPSE attention path (full-matrix, "
                                       "block-wise, batched: the glimpse_path fixture)")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("every_path") and "glimpse_path" not in metafunc.fixturenames:
        metafunc.fixturenames.append("glimpse_path")
        metafunc.parametrize("glimpse_path", ["full_matrix", "blockwise", "batched"], indirect=True)


@pytest.fixture
def glimpse_path(request, monkeypatch):
    """GLIMPSE's path="auto" set to `request.param` for the test: "full_matrix", "blockwise" (in
    blocks of a few rows) or "batched" (block-wise, every answer token in one batched backward
    pass); the test fails if GLIMPSE ran
    but never took that path (an explanation computed outside the test, e.g. in a module fixture,
    would otherwise pass unchecked)."""
    from glimpse import blocks
    from glimpse.methods import glimpse as module

    blockwise = request.param != "full_matrix"
    monkeypatch.setattr(module, "BLOCKWISE_FROM", 0 if blockwise else 1 << 62)
    if request.param == "batched":
        monkeypatch.setattr(module.Glimpse, "token_batch", lambda self, model, layout, layers: len(layout.answer))
    # Blocks of a few rows, so that tiny sequences are cut into many blocks as long ones are.
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1 << 11)
    taken = []
    original = module.Glimpse.blockwise

    def recorded(self, model, n_positions):
        taken.append(original(self, model, n_positions))
        return taken[-1]
    monkeypatch.setattr(module.Glimpse, "blockwise", recorded)
    yield request.param
    if taken:
        assert blockwise in taken, f"GLIMPSE never took the {request.param} path"


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder this process may not write into. Root ignores permission bits, so there the kernel's
    refusal is played: creating anything under the folder fails as it would for a user."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        real_mkdir, real_open = os.mkdir, os.open

        def refuse(path):
            if Path(path).absolute().is_relative_to(folder):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        def mkdir(path, *args, **kwargs):
            refuse(path)
            return real_mkdir(path, *args, **kwargs)

        def open_(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "open", open_)
    yield folder
    folder.chmod(0o755)
