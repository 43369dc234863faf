"""Opening an exported model with onnxruntime, and the rule for its input's dtype, in one place:
``oddeye export`` checks its graph with these, ``oddeye serve`` serves with them, so the two cannot
open a model or feed it differently. Imports neither PyTorch nor anything that does (a server of
an exported model runs without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from oddeye.errors import OddeyeError, first_line

InputDtype = Literal["uint8", "float32"]


def input_dtype(lo: float, hi: float) -> InputDtype:
    """The dtype a model takes its images in, from its normalisation's range ``(lo, hi)``: uint8
    exactly when that is (0, 255), the range of 8-bit images; float32 for runs trained on float
    images, whose values uint8 would clip or round."""
    return "uint8" if (float(lo), float(hi)) == (0.0, 255.0) else "float32"


def open_session(path: str | Path) -> Any:
    """An onnxruntime session on ``path``, on the CPU (the provider every onnxruntime has, and the
    one exports are checked on), logging errors only; an OddeyeError naming the file when
    onnxruntime is missing or cannot load it."""
    try:
        import onnxruntime
    except ImportError:
        raise OddeyeError(
            f"{path}: running an .onnx file needs onnxruntime: pip install 'oddeye[serve]' (or [export])"
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error classes
        raise OddeyeError(f"{path}: expected an ONNX model, found: {first_line(e)}") from None
