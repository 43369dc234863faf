"""Atomic outputs: write to a temporary sibling, then rename; nothing half-written on failure."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from oddeye.errors import OddeyeError, first_line

WRITE_ERRORS = (OSError, SafetensorError)  # safetensors reports a failed write (a full disk) as its own


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # temp files are created 0600 / 0700; finished outputs get the usual modes


def unwritable(path: Path, err: Exception) -> OddeyeError:
    reason = getattr(err, "strerror", None) or first_line(err).removeprefix("Error while serializing: ")
    return OddeyeError(f"{path}: expected a writable location, found: {reason}")


def check_writable(path: str | Path) -> None:
    """Fail now, before any work, where a file could not be written at ``path`` later: it is a
    folder, or its nearest existing folder is not a folder or not writable (the folders missing
    on the way are created when the file is written)."""
    path = Path(path)
    if path.is_dir():
        raise unwritable(path, IsADirectoryError(errno.EISDIR, "Is a directory"))
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise unwritable(path, NotADirectoryError(errno.ENOTDIR, f"{parent} is not a folder"))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise unwritable(path, PermissionError(errno.EACCES, "Permission denied"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise unwritable(path, e) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~UMASK)
        os.replace(tmp_path, path)
    except WRITE_ERRORS as e:
        raise unwritable(path, e) from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` on success.

    An existing non-empty ``path`` is an error unless ``force``; then it is replaced only once the
    new folder is complete.
    """
    path = Path(path)
    check_new_dir(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise unwritable(path, e) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~UMASK)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except WRITE_ERRORS as e:
        raise unwritable(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_new_dir(path: str | Path, force: bool) -> None:
    """Refuse to overwrite an existing non-empty folder unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OddeyeError(f"{path}: expected a folder for the run, found a file")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OddeyeError(
            f"{path}: expected a new or empty run folder, found an existing one (pass --force to replace it)"
        )


def json_text(value: Any, indent: int = 2, width: int = 100) -> str:
    """JSON for people to read: objects indented, lists of plain values on one line when they fit
    in ``width`` characters (a run's list of transformations stays a few lines, not hundreds)."""

    def render(v: Any, level: int) -> str:
        pad, end = " " * (indent * (level + 1)), " " * (indent * level)
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = [f"{pad}{json.dumps(str(k))}: {render(x, level + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + end + "}"
        if isinstance(v, (list, tuple)):
            flat = json.dumps(v)
            if len(flat) <= width and not any(isinstance(x, dict) for x in v):
                return flat
            return "[\n" + ",\n".join(pad + render(x, level + 1) for x in v) + "\n" + end + "]"
        return json.dumps(v)

    return render(value, 0) + "\n"
