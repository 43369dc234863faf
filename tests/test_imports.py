"""The package's import graph has no cycles, counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import oddeye

SRC = Path(oddeye.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """The oddeye modules ``name`` imports anywhere in its file (not under ``if TYPE_CHECKING``)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base])
            for alias in node.names:  # 'from oddeye import commands' names a module
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def test_the_import_graph_has_no_cycles() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_imports_inside_functions() -> None:
    assert "oddeye.commands" in imports_of("oddeye.cli")  # imported lazily, in _run
    assert "oddeye.estimator" not in imports_of("oddeye.runs")
    assert imports_of("oddeye._version") == set()


HEAVY = ("matplotlib", "sklearn", "scipy")  # plotting, and metrics (about a second to import)


def test_loading_and_scoring_import_no_plotting_library(tmp_path: Path) -> None:
    """A server or a batch job that only scores never pays for matplotlib (nor scikit-learn): through
    the Python API (load, score, oddeye.score with a threshold) and the CLI's score command alike."""
    import subprocess
    import sys

    import numpy as np

    from helpers import blobs

    run = tmp_path / "run"
    oddeye.train(blobs(30, (8, 8, 1)), "pixel-knn", run, progress=False)
    np.save(tmp_path / "x.npy", blobs(5, (8, 8, 1)))
    code = f"""
import sys
import oddeye
from oddeye.cli import main
det = oddeye.load({str(run)!r}, progress=False)
det.score({str(tmp_path / "x.npy")!r})
oddeye.score(det, {str(tmp_path / "x.npy")!r}, out={str(tmp_path / "p.csv")!r}, threshold=True)
assert main(["score", {str(run)!r}, {str(tmp_path / "x.npy")!r}, "--out", {str(tmp_path / "q.csv")!r},
             "--quiet"]) == 0
print(sorted(m for m in sys.modules if m.startswith({HEAVY!r})))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
