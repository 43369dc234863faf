"""Errors a person can act on.

Every problem caused by the user's input or environment is an :class:`OddeyeError`. The CLI prints
it as a single line and exits with status 2; the Python API lets it propagate.
"""

from __future__ import annotations

from os import PathLike


class OddeyeError(Exception):
    """A problem with the user's input or environment, reported as one line (exit code 2)."""


class InputError(OddeyeError):
    """Bad input data: names the file, what was expected and what was found."""

    def __init__(self, source: str | PathLike[str], expected: str, found: str) -> None:
        self.source = str(source)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.source}: expected {expected}, found {found}")


class TrainingInterrupted(OddeyeError):
    """Ctrl-C during training, after the last finished epoch was checkpointed (exit code 130)."""


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message, or its class name when the message is empty or blank.

    Errors from libraries (PyTorch, onnxruntime, safetensors, Pillow) often run to many lines, and
    some have no message at all; a one-line error that quotes them takes this, which never fails.
    """
    try:
        text = str(e).strip()
    except Exception:  # noqa: BLE001 - a broken __str__ still gives a line
        text = ""
    return text.splitlines()[0] if text else type(e).__name__
