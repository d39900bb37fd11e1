"""notebooks/: valid, outputs cleared, only the public API (make test); executed top to bottom (make test-all)."""

import ast
import importlib
import os
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "finetune_your_images.ipynb")


def _read(name):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(os.path.join(REPO, "notebooks", name), as_version=4)


def _private_uses(tree):
    """Names of ours a notebook may not use: underscore names, or names a module's __all__ does not export."""
    problems, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("efficientnetv2_keras"):
            module = importlib.import_module(node.module)
            public = getattr(module, "__all__", None)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = importlib.util.find_spec(submodule) is not None if hasattr(module, "__path__") else False
                if alias.name.startswith("_") or (public is not None and alias.name not in public and not is_module):
                    problems.append(f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("efficientnetv2_keras"):
                    aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = importlib.import_module(aliases[node.value.id])
            if node.attr.startswith("_") or node.attr not in getattr(module, "__all__", dir(module)):
                problems.append(f"{node.value.id}.{node.attr}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            problems.append(f".{node.attr}")
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_cleared_and_uses_the_public_api(name):
    nbformat = pytest.importorskip("nbformat")
    book = _read(name)
    nbformat.validate(book)
    cells = [cell for cell in book.cells if cell.cell_type == "code"]
    assert cells and book.cells[0].cell_type == "markdown"
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, "outputs are cleared in the repository"
    tree = ast.parse("\n\n".join(cell.source for cell in cells), filename=name)  # every cell is Python
    assert _private_uses(tree) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)  # measured 7-11 min each on a shared, heavily loaded 2-core machine
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path):
    """Executed in a fresh kernel, in a scratch folder (each writes only under its own outputs folder)."""
    nbclient = pytest.importorskip("nbclient")
    book = _read(name)
    os.environ["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")  # the kernel imports this checkout
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.perf_counter()
    nbclient.NotebookClient(book, timeout=1500, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"{name}: {time.perf_counter() - start:.0f} s")
    errors = [output for cell in book.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors
