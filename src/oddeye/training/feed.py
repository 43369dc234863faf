"""The input pipeline: where the training loop's batches come from.

The course's loop spent its time here (a per-image Python ``Dataset`` converting to float, then a
``DataLoader`` copying float32 batches). oddeye moves uint8 and normalises on the device:

- On CUDA, when the uint8 set fits in a share of the free GPU memory (1.7 GB for the homework's
  140k images), it is copied there once, chunk by chunk, and every batch is gathered by index on
  the GPU: no host work per step at all.
- Otherwise (CPU, MPS, or a set too large for the GPU), batches are gathered by index from the
  (memory-mapped) array in a background thread one batch ahead, pinned on CUDA so the copy runs
  asynchronously while the previous step computes.

Either way a batch holds exactly the same numbers, so results do not depend on the path taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from oddeye.data.imageset import ImageSet

RESIDENT_SHARE = 0.5  # of the free GPU memory the resident uint8 set may take
COPY_CHUNK = 8192  # images per host-to-device copy when making the set resident


class Feed:
    """Normalised (B, C, H, W) float batches of ``data`` on ``device``, gathered by index.

    ``resident``: keep the raw set on the device (None: on CUDA when it fits). ``channels_last``:
    the memory format the model prefers.
    """

    def __init__(
        self,
        data: ImageSet,
        device: torch.device,
        channels_last: bool = False,
        resident: bool | None = None,
    ) -> None:
        self.data, self.device, self.channels_last = data, device, channels_last
        if resident is None:
            resident = device.type == "cuda" and data.array.nbytes <= RESIDENT_SHARE * _free_bytes(device)
        self.stored = _copy_to(data, device) if resident else None
        self.pin = device.type == "cuda" and self.stored is None

    @property
    def resident(self) -> bool:
        return self.stored is not None

    def raw(self, idx: np.ndarray) -> torch.Tensor:
        """The images at ``idx`` as stored (uint8 for the homework), (B, C, H, W), on the device
        when resident, else on the host (pinned on CUDA)."""
        if self.stored is not None:
            t = self.stored[torch.as_tensor(idx, device=self.device)]
            return t.permute(0, 3, 1, 2) if self.data.layout == "NHWC" else t
        t = self.data.batch(idx)
        return t.pin_memory() if self.pin else t

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        return self.to_model(self.raw(idx))

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        """A raw batch on the device, normalised to [-1, 1], in the model's memory format."""
        x = self.data.normalisation.apply(raw.to(self.device, non_blocking=True))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """(indices, normalised batch) for each of ``batches``, the next one gathered in a
        background thread while the caller computes on this one."""
        batches = iter(batches)
        if self.stored is not None:  # gathering on the device is already asynchronous
            for idx in batches:
                yield idx, self(idx)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="oddeye-feed") as pool:
            idx = next(batches, None)
            pending = pool.submit(self.raw, idx) if idx is not None else None
            while pending is not None:
                raw, current = pending.result(), idx
                idx = next(batches, None)
                pending = pool.submit(self.raw, idx) if idx is not None else None
                yield current, self.to_model(raw)


def _free_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def _copy_to(data: ImageSet, device: torch.device) -> torch.Tensor:
    """The raw array as one tensor on ``device``, copied in chunks (never a whole host copy)."""
    array = data.array
    native = array.dtype.newbyteorder("=")  # torch has no big-endian tensors
    out = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, native)).dtype, device=device)
    for start in range(0, len(array), COPY_CHUNK):
        part = np.ascontiguousarray(array[start : start + COPY_CHUNK], dtype=native)
        out[start : start + len(part)] = torch.from_numpy(part).to(device)
        data.release(slice(start, start + len(part)))
    return out
