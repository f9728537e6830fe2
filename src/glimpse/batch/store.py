"""A batch run's output folder (docs/batch-format.md): `manifest.json`, one record per item and
method under `items/`, and `results.parquet`, rebuilt from the records.

Every file is written atomically (a temporary file of a name no other writer uses, fsync, rename),
and an item's record is written last, after its arrays: a record on disk is a finished item, and a
run killed at any moment leaves either the record or nothing. A killed writer's temporary files are
swept by the next writer of that item (one item is only ever written by one process: shards and
workers split items), and at the top of the folder once they are an hour old (several shards may
be writing the manifest and table there). The table is never appended to, only rebuilt, so no
crash can corrupt it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import BatchError
from ..saved import json_text

MANIFEST = "manifest.json"
TABLE = "results.parquet"
ITEMS = "items"
TEMPORARY = ".tmp-"
# Top-level temporary files older than this are a killed writer's.
STALE_SECONDS = 3600
# The manifest entries that must match for a run to add to a folder (the rest are recorded only).
SETTINGS = ("model", "revision", "dtype", "methods", "options", "max_new_tokens", "max_answer_tokens", "fixation_top")
# Ground-truth metrics (null where the item has no such ground truth): mask or box, then fixations.
METRICS = ("pointing_game", "energy_in_mask", "nss", "cc", "kl_div", "sim", "auc_judd", "prompt_cc", "prompt_spearman")
COLUMNS = ("ordinal", "id", "method", "status", "error", "question", "answer", "answer_generated", "answer_tokens",
           "expected_answer", "correct", "token_weights", "seconds", "peak_memory_mb", *METRICS, "notes", "arrays", "options")


def item_key(item_id: str) -> str:
    """A file name for item `item_id` that cannot leave the output folder: its letters, digits,
    '-' and '_' (at most 60; no dots, slashes or anything else), then a hash of the whole id, so
    that ids differing only in dropped characters stay apart."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", item_id).strip("_")[:60]
    digest = hashlib.sha256(item_id.encode()).hexdigest()[:12]
    return f"{slug}-{digest}" if slug else digest


def method_file(label: str) -> str:
    """The file stem of a method's records: its name, or for a variant (glimpse:layer_fraction=0.6)
    a name made safe as item ids are."""
    return label if re.fullmatch(r"[A-Za-z0-9_]+", label) else item_key(label)


def write_atomic(path: Path, data: bytes) -> None:
    """`data` into `path` so that `path` holds either its old content or all of `data`, whatever happens."""
    temporary = path.with_name(f"{path.name}{TEMPORARY}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


class Store:
    """The output folder of one batch run."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise BatchError(f"the output {self.folder} exists and is not a folder")
        (self.folder / ITEMS).mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(f"*{TEMPORARY}*"):
            if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                leftover.unlink(missing_ok=True)

    # --- manifest -----------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        path = self.folder / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BatchError(f"{path} is damaged ({exc.msg}); move it away to start this folder afresh") from None

    def claim(self, manifest: dict[str, Any], force: bool) -> list[str]:
        """Write `manifest` unless the folder was made with other settings (a BatchError, unless
        `force`). Returns the differences found, one line each (empty for a new or matching folder)."""
        old = self.manifest()
        differences = [] if old is None else _differences({k: old.get(k) for k in SETTINGS},
                                                          {k: manifest.get(k) for k in SETTINGS})
        if differences and not force:
            raise BatchError(f"{self.folder} holds a batch run made with other settings ({'; '.join(differences)}); "
                             "use another output folder, or force to add to it (its records keep the settings they "
                             "were made with)")
        write_atomic(self.folder / MANIFEST, json_text(manifest).encode())
        return differences

    # --- records ------------------------------------------------------------------------------
    def item_folder(self, item_id: str) -> Path:
        folder = self.folder / ITEMS / item_key(item_id)
        folder.mkdir(exist_ok=True)
        return folder

    def record_path(self, item_id: str, method: str) -> Path:
        return self.folder / ITEMS / item_key(item_id) / f"{method_file(method)}.json"

    def record(self, item_id: str, method: str) -> dict[str, Any] | None:
        path = self.record_path(item_id, method)
        return _read_record(path) if path.is_file() else None

    def write(self, item_id: str, method: str, record: dict[str, Any], files: dict[str, bytes]) -> None:
        """The item's files (name -> bytes, e.g. its arrays) first, then its record."""
        folder = self.item_folder(item_id)
        for leftover in folder.glob(f"*{TEMPORARY}*"):  # a killed writer's
            leftover.unlink(missing_ok=True)
        for name, data in files.items():
            write_atomic(folder / name, data)
        write_atomic(self.record_path(item_id, method), json_text(record, indent=1).encode())

    def records(self) -> list[dict[str, Any]]:
        found = [_read_record(path) for path in sorted((self.folder / ITEMS).glob("*/*.json"))]
        return [record for record in found if record is not None]

    # --- table --------------------------------------------------------------------------------
    def rebuild_table(self, method_order: list[str]) -> Path:
        """results.parquet from every record, in input order, then method order."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rank = {name: i for i, name in enumerate(method_order)}
        rows = sorted(self.records(), key=lambda r: (r["ordinal"], r["id"], rank.get(r["method"], len(rank)), r["method"]))
        table = pa.Table.from_pylist([{name: row.get(name) for name in COLUMNS} for row in rows], schema=table_schema())
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        path = self.folder / TABLE
        write_atomic(path, sink.getvalue().to_pybytes())
        return path


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    """One line per setting that differs, nested options named by their path (options.glimpse.path)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(set(old) | set(new), key=str)
                for line in _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))]
    return [] if old == new else [f"{where}: {json.dumps(old)} before, {json.dumps(new)} now"]


def table_schema():
    import pyarrow as pa

    return pa.schema([
        ("ordinal", pa.int64()), ("id", pa.string()), ("method", pa.string()), ("status", pa.string()),
        ("error", pa.string()), ("question", pa.string()), ("answer", pa.string()), ("answer_generated", pa.bool_()),
        ("answer_tokens", pa.list_(pa.string())), ("expected_answer", pa.string()), ("correct", pa.bool_()),
        ("token_weights", pa.list_(pa.float32())),
        ("seconds", pa.float64()), ("peak_memory_mb", pa.float64()), ("pointing_game", pa.bool_()),
        ("energy_in_mask", pa.float64()), ("nss", pa.float64()), ("cc", pa.float64()), ("kl_div", pa.float64()),
        ("sim", pa.float64()), ("auc_judd", pa.float64()), ("prompt_cc", pa.float64()),
        ("prompt_spearman", pa.float64()),
        ("notes", pa.list_(pa.string())), ("arrays", pa.string()),
        ("options", pa.string()),
    ])


def _read_record(path: Path) -> dict[str, Any] | None:
    # Written atomically, so a record is whole or absent; one edited by hand into nonsense is skipped (redone).
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and {"id", "method", "status", "ordinal"} <= set(record) else None
