"""`glimpse.batch.run`: explain every item of an input with one or more methods, into an output
folder that a rerun of the same call resumes (docs/batch-format.md).

The run reads and checks every row, claims the output folder (its manifest must match the run's
settings), skips the items whose records exist (failed ones too, unless `retry_failed`), explains
the rest on the chosen engine, and rebuilds results.parquet from all records. Ctrl-C stops after
the item in progress (a second Ctrl-C at once); finished items are on disk either way.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BatchError, OptionError
from .items import Item, checksum, in_shard, read_items
from .store import MANIFEST, Store
from .work import Settings

ENGINES = ("local", "ray")


@dataclass
class Summary:
    """What a batch run did: items explained now (done, failed), skipped (finished before), left
    (not reached: interrupted), and where the table is."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    left: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    table: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def add(self, failed: bool) -> None:
        """One more item explained (failed if any of its methods failed)."""
        if failed:
            self.failed += 1
        else:
            self.done += 1

    @property
    def items_per_second(self) -> float:
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        text = (f"{self.done} done, {self.failed} failed, {self.skipped} skipped (finished before)"
                f"{f', {self.left} left' if self.left else ''} in {self.seconds:.1f} s "
                f"({self.items_per_second:.2f} items/s)")
        return f"interrupted: {text}" if self.interrupted else text


def run(input: str | Path, out: str | Path, *, model: str | None = None, methods: Sequence[str] = ("glimpse",),
        options: dict[str, Any] | None = None, shard: tuple[int, int] | None = None, engine: str = "local",
        workers: int = 1, retry_failed: bool = False, force: bool = False, figures: bool = False,
        device: str = "auto", dtype: str = "auto", revision: str | None = None, trust_remote_code: bool = False,
        max_new_tokens: int = 32, max_answer_tokens: int | None = None, limit: int | None = None,
        fixation_top: float = 0.1, progress: Callable[[int, int], None] | None = None) -> Summary:
    """Explain every item of `input` (in shard (i, n) of it, if given; its first `limit`, if given)
    with each of `methods` into the folder `out`. `options` are method options: "key" for every method that takes it,
    "method.key" for one. `fixation_top` is the share of an item's `attention_map` pixels that count as its
    fixations for NSS and AUC-Judd. `progress(finished, total)` is called as items finish."""
    from ..loading import resolve_device, resolve_dtype, resolve_model

    if engine not in ENGINES:
        raise BatchError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if workers < 1:
        raise BatchError(f"workers must be at least 1, got {workers}")
    if not 0 < fixation_top <= 1:
        raise BatchError(f"fixation_top is the share of an attention map's pixels counted as fixations, in (0, 1]; "
                         f"got {fixation_top}")
    settings = Settings(resolve_methods(methods, options or {}), max_new_tokens, max_answer_tokens, figures,
                        fixation_top)
    if limit is not None and limit < 1:
        raise BatchError(f"limit must be at least 1, got {limit}")
    items = [item for item in read_items(input) if in_shard(item.id, shard)][:limit]
    source = resolve_model(model)
    local = Path(source).expanduser()
    requested_device, device = device, resolve_device(device)
    dtype_name = str(resolve_dtype(dtype, device)).removeprefix("torch.")
    manifest = {"schema": "glimpse.batch", "schema_version": 1,
                "model": str(local.resolve()) if local.exists() else source, "revision": revision, "dtype": dtype_name,
                "methods": [label for label, _, _ in settings.methods],
                "options": {label: params for label, _, params in settings.methods},
                "max_new_tokens": max_new_tokens, "max_answer_tokens": max_answer_tokens, "fixation_top": fixation_top,
                "glimpse_version": __version__, "input": str(Path(input).resolve()), "input_checksum": checksum(input)}
    store = Store(out)
    old = store.manifest()
    summary = Summary()
    summary.warnings += [f"added to a folder made with other settings: {line}" for line in store.claim(manifest, force)]
    if old is not None and old.get("input_checksum") != manifest["input_checksum"]:
        summary.warnings.append("the input changed since this folder's last run: finished items are kept by id")
    pending = pending_work(store, items, settings, retry_failed)
    summary.skipped = len(items) - len(pending)
    start = time.perf_counter()
    # As the user gave them: a Ray worker resolves "auto" on its own machine.
    load = {"model": source, "device": requested_device, "dtype": dtype, "revision": revision,
            "trust_remote_code": trust_remote_code}
    try:
        if engine == "local":
            _run_local(load, pending, settings, store, summary, progress)
        else:
            from .ray_engine import run_ray

            run_ray(load, pending, settings, store, summary, workers, progress)
    finally:
        summary.seconds = time.perf_counter() - start
        summary.left = len(pending) - summary.done - summary.failed
        summary.table = store.rebuild_table(manifest["methods"])
    return summary


def resolve_methods(methods: Sequence[str], options: dict[str, Any]) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """(label, method, all its options) for each entry of `methods`: a method's name, or a variant
    METHOD:KEY=VALUE[:KEY=VALUE...] (its label is the whole entry). `options` apply to every entry
    whose method takes them ("key") or to one method's entries ("method.key"); an entry's own
    options win. An option nothing takes, or an entry named twice, is an OptionError."""
    from ..methods import get_method, method_class, parse_variant

    entries = [entry.strip() for entry in methods]
    if not entries:
        raise OptionError("give at least one method")
    if len(set(entries)) != len(entries):
        raise OptionError(f"a method is named twice in {', '.join(entries)}")
    variants = [(entry, *parse_variant(entry)) for entry in entries]
    names = sorted({name for _, name, _ in variants})
    declared = {name: method_class(name).options for name in names}
    shared: dict[str, dict[str, Any]] = {name: {} for name in names}
    for key, value in options.items():
        method, _, option = key.rpartition(".")
        if method and method not in declared:
            raise OptionError(f"option {key!r} names method {method!r}, which this run does not use ({', '.join(names)})")
        targets = [method] if method else [name for name in names if option in declared[name]]
        if not targets or option not in declared[targets[0]]:
            raise OptionError(f"no method of this run ({', '.join(names)}) takes the option {option!r} "
                              "(see `glimpse methods`)")
        for target in targets:
            shared[target][option] = value
    return tuple((label, name, get_method(name, **{**shared[name], **own}).params()) for label, name, own in variants)


def pending_work(store: Store, items: list[Item], settings: Settings, retry_failed: bool) -> list[tuple[Item, list[str]]]:
    """Each item with the methods it still needs: those without a record, or with a failed one when
    `retry_failed` (then only those)."""
    pending = []
    for item in items:
        records = {label: store.record(item.id, label) for label, _, _ in settings.methods}
        if retry_failed:
            todo = [name for name, record in records.items() if record is not None and record["status"] == "failed"]
        else:
            todo = [name for name, record in records.items() if record is None]
        if todo:
            pending.append((item, todo))
    return pending


def _run_local(load: dict[str, Any], pending: list[tuple[Item, list[str]]], settings: Settings, store: Store,
               summary: Summary, progress: Callable[[int, int], None] | None) -> None:
    import glimpse

    from .work import any_failed, explain_item

    if not pending:
        return
    loaded = glimpse.load(**load)
    with stop_requested() as stop:
        for finished, (item, todo) in enumerate(pending, 1):
            records = explain_item(loaded.model, loaded.processor, item, settings, store, todo)
            summary.add(any_failed(records))
            if progress is not None:
                progress(finished, len(pending))
            if stop.is_set():
                summary.interrupted = finished < len(pending)
                break


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event set by a first Ctrl-C (the run stops after the current item); a second Ctrl-C
    raises KeyboardInterrupt at once. Outside the main thread, Ctrl-C keeps its usual meaning."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current item (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def read_table(out: str | Path) -> Any:
    """results.parquet of a batch folder as a pyarrow Table."""
    import pyarrow.parquet as pq

    path = Path(out) / "results.parquet"
    if not path.is_file():
        raise BatchError(f"no results.parquet in {out}: run the batch first")
    return pq.read_table(path)


def load_record(out: str | Path, item_id: str, method: str) -> dict[str, Any]:
    """The record of item `item_id` by `method` in a batch folder; a BatchError unless it is done."""
    if not (Path(out) / MANIFEST).is_file():
        raise BatchError(f"{out} is not a batch folder (no {MANIFEST} in it)")
    record = Store(out).record(item_id, method)
    if record is None or record["status"] != "done":
        state = "no record" if record is None else f"a failed record ({record['error']})"
        raise BatchError(f"{out} holds {state} for item {item_id!r} and method {method!r}")
    return record


def load_explanation(out: str | Path, item_id: str, method: str, images: list[Any] | None = None) -> Any:
    """The Explanation of item `item_id` by `method` from a batch folder, its images read again from
    the paths the record names (or `images`, for items whose images were held in memory)."""
    return explanation_of(out, load_record(out, item_id, method), images)


def explanation_of(out: str | Path, record: dict[str, Any], images: list[Any] | None = None) -> Any:
    """The Explanation a done record of batch folder `out` holds (images as in `load_explanation`)."""
    from safetensors.numpy import load_file

    from ..explanation import Explanation
    from ..images import load_image

    if images is None:
        if any(source.startswith("<in memory") for source in record["images"]):
            raise BatchError(f"item {record['id']!r} had its images in memory (a datasets Image column): "
                             "pass them as images")
        images = [load_image(path) for path in record["images"]]
    return Explanation.from_document(record["explanation"], load_file(str(Path(out) / record["arrays"])), images)
