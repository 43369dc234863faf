"""Device and numeric precision choice."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from oddeye.errors import OddeyeError
from oddeye.training.distributed import rank_device


def choose_device(request: str = "auto") -> torch.device:
    """CUDA > MPS > CPU for ``auto``; an explicit request must be available."""
    if request == "auto":
        if torch.cuda.is_available():
            return rank_device(torch.device("cuda"))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(request)
    except RuntimeError:
        raise OddeyeError(f"unknown device {request!r}; expected auto, cpu, cuda[:N] or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OddeyeError("device cuda requested, but this PyTorch build sees no CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OddeyeError("device mps requested, but MPS is not available here")
    return rank_device(device)


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AMX or AVX512-BF16), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def choose_precision(request: str, device: torch.device, cpu_bf16: bool = True) -> str:
    """``auto`` picks bf16 where the hardware runs it natively and the model gains from it."""
    if request != "auto":
        return request
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16 and cpu_has_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
