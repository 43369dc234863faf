"""Published one-class results: printed beside ours, never re-run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Published:
    """A number from a paper: printed beside ours, never re-run."""

    method: str
    source: str
    mean: float
    per_class: tuple[float, ...] = ()
    pretrained: bool = False


PUBLISHED = {
    "fmnist": [
        Published(
            "GEOM",
            "Golan & El-Yaniv 2018",
            0.935,
            (0.994, 0.976, 0.911, 0.899, 0.921, 0.934, 0.833, 0.989, 0.908, 0.992),
        ),
        Published("ARNet", "attribute restoration network, 2022", 0.939),
        Published("GOAD", "Bergman & Hoshen 2020, claimed", 0.941),
        Published("PANDA", "Reiss et al. 2021, ImageNet-pretrained: not comparable", 0.956, pretrained=True),
    ],
    "digits": [],
}
