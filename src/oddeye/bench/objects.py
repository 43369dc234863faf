"""``oddeye bench objects``: small marks on one object photographed again and again, with exact masks.

An inspection line photographs the same kind of object for every image, never twice at exactly
the same place: each shot is turned, scaled and shifted a little, its light changes, its sensor
adds noise. The avatars are drawn at the same place to the pixel, so they cannot show what that
costs a detector that compares each patch with the training patches at its place. Here each of
scikit-image's colour photographs (astronaut, coffee, chelsea) stands for an object: its centred
square, turned by up to ``100 x jitter`` degrees, scaled by up to ``1 +- jitter`` and shifted by up to
``jitter`` of the side (``--jitter``, 0.02 by default), its brightness scaled by 0.95-1.05 and
Gaussian noise of 2 grey levels added. ``TRAIN`` training shots; ``TEST`` normal test shots and as
many with one mark each (``bench avatars --validation marks``: a scratch, a stain, a missing part;
the mask is where a pixel changed). ``--validation``: the same training shots against ``TEST``
fresh shots and as many given a synthetic blob each, never the marks: where settings are chosen.
Needs scikit-image (its photographs ship inside its wheel), for this benchmark only.
"""

from __future__ import annotations

import argparse

import numpy as np

from oddeye.bench.oneclass import int_list
from oddeye.bench.textures import SEED, TEST, TRAIN, TextureSet, marked_set, run_sets
from oddeye.errors import InputError, OddeyeError

OBJECTS = ("astronaut", "coffee", "chelsea")
JITTER = 0.02  # the largest turn (in units of 100 degrees), scale change and shift, as a share of the side
MARGIN = 1.25  # the canvas a shot is cut from, as a multiple of the side (room to turn and shift)
MAX_SIDE = 512


def load_objects(names: tuple[str, ...] = OBJECTS) -> dict[str, np.ndarray]:
    """scikit-image's photographs by name, their centred square, (S, S, 3) uint8; a one-line error
    without scikit-image."""
    try:
        import skimage.data
    except ImportError:
        raise InputError(
            "oddeye bench objects", "scikit-image (pip install scikit-image)", "it is not installed"
        ) from None
    out = {}
    for name in names:
        image = np.asarray(getattr(skimage.data, name)(), np.uint8)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        h, w = image.shape[:2]
        side = min(h, w)
        out[name] = image[(h - side) // 2 : (h + side) // 2, (w - side) // 2 : (w + side) // 2, :3]
    return out


def shots(image: np.ndarray, n: int, side: int, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """(n, side, side, 3) uint8 shots of ``image``: each turned, scaled and shifted at random by up
    to ``jitter`` (see the module), its brightness and noise drawn anew."""
    from PIL import Image

    canvas_side = int(round(side * MARGIN))
    canvas = Image.fromarray(image).resize((canvas_side, canvas_side), Image.Resampling.BICUBIC)
    out = np.empty((n, side, side, 3), np.uint8)
    for i in range(n):
        angle = rng.uniform(-100, 100) * jitter
        scale = 1 + rng.uniform(-1, 1) * jitter
        dx, dy = rng.uniform(-1, 1, 2) * jitter * side
        turned = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(dx, dy))
        cut = int(round(canvas_side * scale / MARGIN))
        left = (canvas_side - cut) // 2
        shot = turned.crop((left, left, left + cut, left + cut)).resize(
            (side, side), Image.Resampling.BILINEAR
        )
        light = np.asarray(shot, np.float32) * rng.uniform(0.95, 1.05) + rng.normal(0, 2, (side, side, 3))
        out[i] = light.clip(0, 255).round().astype(np.uint8)
    return out


def object_set(
    name: str,
    image: np.ndarray,
    side: int,
    jitter: float = JITTER,
    seed: int = SEED,
    validation: bool = False,
) -> TextureSet:
    """The shots of one object at ``side`` pixels, seeded by its name, the side and ``seed`` (the
    validation's test shots by a seed of their own), marked as ``textures.marked_set`` marks them.
    The set is named after the object, and its jitter where it is not :data:`JITTER` (its records
    then keep their own files)."""
    rng = np.random.default_rng([seed, side, *name.encode()])
    train = shots(image, TRAIN, side, jitter, rng)
    if validation:
        rng = np.random.default_rng([seed, side, *name.encode(), 1])
    draw = lambda: shots(image, TEST, side, jitter, rng)  # noqa: E731
    named = name if jitter == JITTER else f"{name}-jitter{jitter:g}"
    return marked_set(named, train, draw, rng, validation, {"jitter": jitter})


def run(args: argparse.Namespace) -> int:
    """``oddeye bench objects``: every method on every object and size, records, markdown."""
    sizes = int_list(args.sizes, "sizes", 16, MAX_SIDE)
    names = tuple(t.strip() for t in args.objects.split(",") if t.strip())
    unknown = sorted(set(names) - set(OBJECTS))
    if unknown:
        raise OddeyeError(f"--objects: expected some of {', '.join(OBJECTS)}, found {', '.join(unknown)}")
    if not 0.0 <= args.jitter <= 0.1:
        raise OddeyeError(f"--jitter: expected a share of the side from 0 to 0.1, found {args.jitter:g}")
    images = load_objects(names)
    sets = (
        (size, object_set(name, image, size, args.jitter, validation=args.validation))
        for size in sizes
        for name, image in images.items()
    )
    return run_sets(args, "objects", "object", sets)
