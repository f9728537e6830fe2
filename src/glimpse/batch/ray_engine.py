"""The batch run on Ray Data: the pending items as a dataset (`ray.data.from_items`), explained by
`map_batches` with a pool of `workers` actors, each holding one model replica (one GPU each when
the cluster has GPUs). Each actor writes the same records as the local engine, into the same
folder, so resuming and sharding work alike; the driver only counts what comes back.

Ray connects to the cluster in RAY_ADDRESS (or one already started in this process with
`ray.init`), else starts a local one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import BatchError
from .items import Item
from .runner import Summary, stop_requested
from .store import Store
from .work import Settings, any_failed, explain_item


class Explainer:
    """One model replica: explains the items of each batch it is given and returns their status."""

    def __init__(self, load: dict[str, Any], settings: Settings, out: str,
                 pending: list[tuple[Item, list[str]]]) -> None:
        from transformers.utils import logging

        import glimpse

        logging.disable_progress_bar()
        self.loaded = glimpse.load(**load)
        self.settings, self.store, self.pending = settings, Store(out), pending

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        failed = []
        for index in batch["index"]:
            item, todo = self.pending[int(index)]
            records = explain_item(self.loaded.model, self.loaded.processor, item, self.settings, self.store, todo)
            failed.append(any_failed(records))
        return {"index": list(batch["index"]), "failed": failed}


def run_ray(load: dict[str, Any], pending: list[tuple[Item, list[str]]], settings: Settings, store: Store,
            summary: Summary, workers: int, progress: Callable[[int, int], None] | None) -> None:
    try:
        import ray
    except ImportError:
        raise BatchError("the ray engine needs Ray: pip install 'glimpse-lvlm[ray]'") from None
    if not pending:
        return
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    # The driver shows its own progress bar; Ray Data's reports would interleave with it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    dataset = ray.data.from_items([{"index": i} for i in range(len(pending))])
    explained = dataset.map_batches(
        Explainer, batch_size=1, concurrency=workers, num_gpus=gpus,
        fn_constructor_kwargs={"load": load, "settings": settings, "out": str(store.folder), "pending": pending})
    with stop_requested() as stop:
        finished = 0
        for row in explained.iter_rows():
            finished += 1
            summary.add(bool(row["failed"]))
            if progress is not None:
                progress(finished, len(pending))
            if stop.is_set():
                summary.interrupted = finished < len(pending)
                break
