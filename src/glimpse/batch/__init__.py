"""Dataset-scale runs: `run` explains every item of an input into a resumable output folder, on
this machine or on Ray (docs/batch-format.md)."""

from .items import Item, read_items
from .runner import ENGINES, Summary, load_explanation, read_table, run

__all__ = ["ENGINES", "Item", "Summary", "load_explanation", "read_items", "read_table", "run"]
