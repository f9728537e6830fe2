"""Output folders written at once: files go into a temporary sibling folder that then takes the
folder's place, so an error or an interruption leaves nothing half-written."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """A temporary folder to write `folder`'s files into, which then takes its place: written at once.

    The temporary folder is a sibling, `.<name>.tmp-<random>` (inside the folder itself where the
    parent takes no new entries). On success it is renamed into place when the folder is absent or
    empty; into a folder that already holds files, each file replaces its namesake (one rename each)
    and the folder's other files stay. On an error or an interruption it is removed and the folder is
    left as it was. Its name is new every time, so a killed run's leftover blocks nothing."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    target = folder.resolve()
    staging = _staging(target)
    try:
        yield staging
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging(target: Path) -> Path:
    """A new empty folder beside `target`, or inside it (an existing folder) where its parent refuses."""
    try:
        return _new_folder(target.parent, f".{target.name}.tmp-")
    except OSError:
        if not target.is_dir():
            raise
    return _new_folder(target, f".{target.name}.tmp-")


def _new_folder(parent: Path, prefix: str) -> Path:
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir()  # exclusive, and with the user's umask (tempfile.mkdtemp would make it 0700)
            return folder
        except FileExistsError:
            continue


def _publish(staging: Path, target: Path) -> None:
    if staging.parent == target.parent and target != Path.cwd().resolve():
        try:
            os.replace(staging, target)  # the folder absent or an empty folder (POSIX): one rename
            return
        except OSError:
            if not target.is_dir():
                raise
    for path in sorted(staging.iterdir()):  # a folder with files in it: replace ours, keep the rest
        os.replace(path, target / path.name)
    staging.rmdir()
