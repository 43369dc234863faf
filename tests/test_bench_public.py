"""The benchmarks use oddeye as a user does: its public API and its command line, never its insides.

Checked on the source, with ``ast``: every import (inside functions too) and every ``oddeye.X``
attribute of each module under oddeye/bench/ and of oddeye/serving/loadtest.py. None may reach
into the training loop, scoring or the detector registry, import a private name, or use a module
that is not part of what a user calls.
"""

from __future__ import annotations

import ast
from pathlib import Path

import oddeye
import oddeye.data

SRC = Path(oddeye.__file__).parent
CHECKED = sorted((SRC / "bench").glob("*.py")) + [SRC / "serving" / "loadtest.py"]
FORBIDDEN = ("oddeye.training", "oddeye.scoring", "oddeye.detectors")
# oddeye's top-level names, and the modules a benchmark may use: itself, the data loaders as
# oddeye.data exports them, errors, the io write helpers, progress bars and lines, the command
# line's option parsers (oddeye.config), the pixel metrics (as `oddeye evaluate` reports them),
# and the load test it drives `oddeye serve` with
PUBLIC = set(oddeye.__all__) | {
    "bench",
    "config",
    "data",
    "errors",
    "io",
    "pixel_metrics",
    "progress",
    "serving",
}


def references(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every oddeye name ``source`` imports or reaches as ``oddeye.X...``."""
    found, inner = [], set()
    for node in ast.walk(ast.parse(source)):  # outer nodes first: a chain before its inner links
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative: inside oddeye, so under oddeye.bench or serving
            found += [(node.lineno, f"oddeye.<relative>.{node.module or ''}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Attribute) and node not in inner:
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                inner.add(value)
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "oddeye":
                found.append((node.lineno, ".".join(["oddeye", *chain])))
    return sorted((line, name) for line, name in found if name == "oddeye" or name.startswith("oddeye."))


def private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def problems(source: str) -> list[str]:
    """What in ``source`` is not a user's use of oddeye, one line each."""
    out = []
    for line, name in references(source):
        parts = name.split(".")
        if name.startswith(FORBIDDEN):
            out.append(f"line {line}: {name}: oddeye's internals")
        elif any(private(p) for p in parts):
            out.append(f"line {line}: {name}: a private name")
        elif len(parts) > 1 and parts[1] not in PUBLIC:
            out.append(f"line {line}: {name}: not a public oddeye name")
        elif len(parts) > 2 and parts[1] == "data" and parts[2] not in oddeye.data.__all__:
            out.append(f"line {line}: {name}: not exported by oddeye.data")
        elif len(parts) > 2 and parts[1] == "serving" and parts[2] != "loadtest":
            out.append(f"line {line}: {name}: the server's insides")
    return out


def test_benchmarks_use_only_the_public_api() -> None:
    found = {path.relative_to(SRC).as_posix(): problems(path.read_text()) for path in CHECKED}
    assert len(found) > 10 and "serving/loadtest.py" in found
    bad = [f"{path} {problem}" for path, problems in found.items() for problem in problems]
    assert not bad, "\n".join(bad)


def test_the_check_sees_imports_in_functions_attributes_and_private_names() -> None:
    source = """
import oddeye
from oddeye.bench.common import generate_images
from oddeye.data import load_images

def f():
    from oddeye.training.loop import train_step
    from oddeye.scoring import infer
    from oddeye.bench.speed import _spawn
    from oddeye.data.loaders import image_files
    import oddeye.export
    oddeye.detectors.get_spec("cnn")
    return oddeye.create("cnn"), oddeye.__version__
"""
    found = problems(source)
    assert [p.split(":")[1].strip() for p in found] == [
        "oddeye.training.loop.train_step",
        "oddeye.scoring.infer",
        "oddeye.bench.speed._spawn",
        "oddeye.data.loaders.image_files",
        "oddeye.export",
        "oddeye.detectors.get_spec",
    ], found
