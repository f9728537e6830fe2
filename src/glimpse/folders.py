"""Output folders written at once: files go into a temporary sibling folder that then takes the
folder's place, so an error or an interruption leaves nothing half-written."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


@contextmanager
def staged_folder(folder: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder to write `folder`'s files into, which then takes its place: written at once.

    A folder that already holds files is refused (`OutputError`) unless `overwrite`: then each file
    written replaces its namesake (one rename each) and the folder's other files stay. The temporary
    folder is a sibling, `.<name>.tmp-<random>` (inside the folder itself where the parent takes no
    new entries); an absent or empty folder is replaced by it in one rename. On an error or an
    interruption it is removed and the folder is left as it was; its name is new every time, so a
    killed run's leftover blocks nothing. A folder that cannot be written is an `OutputError`."""
    folder = Path(folder)
    refuse_held(folder, overwrite)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        target = folder.resolve()
        staging = _staging(target)
    except OSError as exc:
        raise _unwritable(folder, exc) from None
    try:
        yield staging
        _publish(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _unwritable(folder, exc) from None
        raise


@contextmanager
def created(folder: Path) -> Iterator[Path]:
    """`folder`, made with its missing parents; an error inside removes what was made, so that a
    failure leaves no empty folders behind."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if missing:
            shutil.rmtree(missing[-1], ignore_errors=True)
        raise


def refuse_held(folder: Path, overwrite: bool) -> None:
    """An `OutputError` where `folder` already holds files and is not to be overwritten."""
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise OutputError(f"{folder} already holds files: choose another folder, or overwrite=True to replace "
                          "the files written there")


def _unwritable(folder: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write {folder}: {exc.strerror or exc}; choose another folder")


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
