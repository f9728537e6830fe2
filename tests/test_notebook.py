"""The example notebook runs top to bottom on the shipped toy model and shows the explanation inline."""

import html
import re
from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "examples" / "quickstart.ipynb"
KERNEL = "glimpse-tests"


def tagged(notebook, tag: str) -> list:
    """The outputs of the cell tagged `tag`."""
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell.outputs


def visible_text(page: str) -> str:
    """An HTML fragment's text as a reader sees it: no scripts, styles or tags, entities decoded."""
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in notebook.cells), "store the notebook without outputs"
    # A kernel of the interpreter running the tests, found first on JUPYTER_PATH: a "python3" kernel the
    # user installed elsewhere may be another environment's, without glimpse.
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    (tmp_path / "work").mkdir()
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=300, startup_timeout=120,
                            resources={"metadata": {"path": str(tmp_path / "work")}})
    client.execute()  # raises CellExecutionError, with the traceback, where a cell fails
    assert not [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    (printed,) = [o.text for o in tagged(notebook, "answer") if o.output_type == "stream" and o.name == "stdout"]
    (inline,) = [o.data["text/html"] for o in tagged(notebook, "inline") if "text/html" in o.get("data", {})]
    # Spaces aside: the report shows the answer's tokens as decoded one by one, and the toy model's
    # word-level tokens carry no spaces.
    answer = "".join(printed.split())
    assert answer and answer in "".join(visible_text(inline).split())
    assert any("image/png" in o.get("data", {}) for o in tagged(notebook, "figure"))
    assert (tmp_path / "work" / "figure.pdf").read_bytes().startswith(b"%PDF")
