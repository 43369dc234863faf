"""The marks a person gives in ``oddeye review``: one CSV, rewritten atomically after every mark.

``Id,label`` (``Id,path,label`` for a folder: each file relative to it), one row per marked image
in id order, label 0 = normal and 1 = anomalous (the labels files' convention; ``normal`` and
``anomalous`` are read too). The file is complete after every mark (temporary file, flushed to
disk, renamed over the old one), so a closed tab, a killed server or a lost machine loses nothing
that was answered; the next start with ``--marks`` resumes from it.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from oddeye.errors import InputError
from oddeye.io import atomic_path

NORMAL, ANOMALOUS = 0, 1
WORDS = {"0": NORMAL, "1": ANOMALOUS, "normal": NORMAL, "anomalous": ANOMALOUS}
NAMES = {NORMAL: "normal", ANOMALOUS: "anomalous"}


class MarksFile:
    """The marks of N images, kept in ``path``; ``paths``: the images' files for a folder.

    ``set`` and ``undo`` write the whole file before they return (a few hundred kB at 20,000
    marks). Undo goes back through this session's marks, one at a time.
    """

    def __init__(self, path: str | Path, n: int, paths: Sequence[str] | None = None) -> None:
        self.path, self.n = Path(path), n
        self.paths = tuple(paths) if paths is not None else None
        self.labels: dict[int, int] = read_marks(self.path, n, self.paths) if self.path.exists() else {}
        self.resumed = len(self.labels)
        self._undo: list[tuple[int, int | None]] = []  # (id, its label before), newest last
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.labels)

    def set(self, image: int, label: int | None) -> None:
        """Mark image ``image`` normal (0) or anomalous (1), or clear its mark (None); written at once."""
        with self._lock:
            before = self.labels.get(image)
            self._apply(image, label)
            self._write()
            self._undo.append((image, before))

    def undo(self) -> tuple[int, int | None] | None:
        """Take back the newest mark of this session: (image, its label now), or None if none is left."""
        with self._lock:
            if not self._undo:
                return None
            image, before = self._undo.pop()
            self._apply(image, before)
            self._write()
            return image, before

    def snapshot(self) -> dict[int, int]:
        """The marks now, as a copy (requests read it while others mark)."""
        with self._lock:
            return dict(self.labels)

    def with_label(self, label: int) -> list[int]:
        """The ids marked ``label``, in order."""
        return sorted(i for i, v in self.snapshot().items() if v == label)

    def _apply(self, image: int, label: int | None) -> None:
        if label is None:
            self.labels.pop(image, None)
        else:
            self.labels[image] = label

    def _write(self) -> None:
        text = io.StringIO()
        out = csv.writer(text, lineterminator="\n")
        out.writerow(["Id", "path", "label"] if self.paths is not None else ["Id", "label"])
        for i in sorted(self.labels):
            out.writerow(
                [i, self.paths[i], self.labels[i]] if self.paths is not None else [i, self.labels[i]]
            )
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="") as f:
                f.write(text.getvalue())
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename, and the rename before the answer


def read_marks(path: Path, n: int, paths: Sequence[str] | None = None) -> dict[int, int]:
    """``path``'s marks as {id: 0/1}, checked against the N images under review (and their paths)."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, "a marks CSV (Id,label)", f"an unreadable file ({e})") from None
    if not rows:
        return {}
    head = [h.strip().lower() for h in rows[0]]
    if head not in (["id", "label"], ["id", "path", "label"]):
        raise InputError(path, "a marks CSV with the header Id,label or Id,path,label", f"{rows[0]!r}")
    with_path = len(head) == 3
    if with_path and paths is None:
        raise InputError(path, "marks of an array file (Id,label)", "a path column (marks of a folder)")
    labels: dict[int, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(head):
            raise InputError(path, f"{len(head)} cells on line {lineno}", f"{len(row)}")
        cell = row[0].strip()
        if not cell.isdigit() or int(cell) >= n:
            raise InputError(path, f"an image id in 0..{n - 1} on line {lineno}", repr(row[0]))
        image = int(cell)
        if with_path and paths is not None and row[1] != paths[image]:
            expected = f"image {image} to be {paths[image]!r} (line {lineno}: marks of these images)"
            raise InputError(path, expected, repr(row[1]))
        word = row[-1].strip().lower()
        if word not in WORDS:
            raise InputError(path, f"a label 0, 1, normal or anomalous on line {lineno}", repr(row[-1]))
        labels[image] = WORDS[word]
    return labels
