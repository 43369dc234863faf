"""Export a run as one ONNX graph, checked against ``oddeye score`` before it is kept.

The graph takes the images as they come, uint8 (B, H, W, C) with any batch size (float32 for
runs trained on float images), and does everything ``oddeye score`` does to them: the
normalisation, the detector, its anomaly map. Outputs: ``score`` (B,) and ``anomaly_map``
(B, H, W). There is one path for the numbers (the detector's own ``infer``), so the exported
model cannot drift from training by construction; the check proves it on every export.

Thresholds and calibration are not in the graph: the operating threshold, how it was chosen and
the held-out scores that define the calibrated scale go into the ONNX metadata (``oddeye``, JSON)
and into a JSON file beside the model, so a server can apply them, change them, or report raw
scores.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from oddeye._version import __version__
from oddeye.data.imageset import Normalisation
from oddeye.errors import OddeyeError, first_line
from oddeye.estimator import Detector
from oddeye.io import atomic_dir, atomic_path, json_text
from oddeye.onnx_session import InputDtype, input_dtype, open_session
from oddeye.thresholds import Threshold

FORMAT = "oddeye-onnx/1"
INPUT, OUTPUTS = "images", ("score", "anomaly_map")
# relative: of max(|score|, how much held-out normal scores vary; see typical_size). Two engines'
# float32 distances (|q|^2 + |b|^2 - 2 q.b, summed in their own order) differ by up to 1.4e-4 of it
# (a texture's default on an AVX-512 Xeon; 3e-5 on AMD EPYC); an export bug differs by 1e-2 or more.
TOLERANCE = 1e-3


class Exported(nn.Module):
    """Raw NHWC images -> (score (B,), anomaly map (B, H, W)), as ``oddeye score`` computes them."""

    def __init__(self, model: nn.Module, norm: Normalisation) -> None:
        super().__init__()
        self.model, self.lo, self.span = model, float(norm.lo), float(norm.hi - norm.lo)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()  # (B, C, H, W)
        x = (x - self.lo) * (2.0 / self.span) - 1.0  # Normalisation.apply's float32 path
        out = self.model.infer(x, maps=True)
        return out.score.float(), out.anomaly_map.float()


@dataclass
class Parity:
    """How the exported model's numbers compare with ``oddeye score``'s on the check images."""

    images: int
    source: str
    max_relative_score_difference: float
    flags_identical: bool | None  # None: the run has no threshold
    max_map_difference: float  # relative to the largest map value
    batch_sizes: list[int]
    ties: int = 0  # images within the tolerance of the threshold (not compared)


@dataclass
class ExportResult:
    """What an export wrote and how its check went."""

    onnx: Path
    json: Path
    parity: Parity


def export_onnx(run: str | Path, out: str | Path, images: str | Path | None = None) -> ExportResult:
    """Write ``out`` (model.onnx) and ``out``.json, or nothing (an OddeyeError) if onnxruntime's
    numbers on the check images differ from ``oddeye score``'s."""
    det = Detector.load(run, device="cpu", progress=False)
    check = _check_images(det, run, images)
    out = Path(out)
    with atomic_path(out) as tmp_model, atomic_path(out.with_name(out.name + ".json")) as tmp_json:
        _write_graph(det, check, tmp_model)
        source = str(images or Path(run) / "heldout_sample.npy")
        parity = check_parity(det, tmp_model, check, source=source, name=out.name)
        meta = describe(det, run, out.name, parity)
        _set_metadata(tmp_model, meta)
        tmp_json.write_text(json_text(meta))
    return ExportResult(out, out.with_name(out.name + ".json"), parity)


def export_triton(run: str | Path, repo: str | Path, name: str | None = None, max_batch: int = 64) -> Path:
    """A Triton model repository: ``REPO/NAME/config.pbtxt`` (ONNX Runtime backend, dynamic
    batching) and ``REPO/NAME/1/model.onnx``, checked as :func:`export_onnx` checks it."""
    name = name or Path(run).resolve().name
    if not name.replace("-", "").replace("_", "").isalnum():
        raise OddeyeError(f"--name: expected letters, digits, - and _ (a Triton model name), found {name!r}")
    if max_batch < 1:
        raise OddeyeError(f"--max-batch: expected a positive number, found {max_batch}")
    repo = Path(repo)
    with atomic_dir(repo / name, force=True) as tmp:
        (tmp / "1").mkdir()
        done = export_onnx(run, tmp / "1" / "model.onnx", None)
        meta = json.loads(done.json.read_text())
        done.json.rename(tmp / "oddeye.json")  # beside the versions, where Triton looks for none
        (tmp / "config.pbtxt").write_text(triton_config(name, meta, max_batch))
    return repo / name


def triton_config(name: str, meta: dict[str, Any], max_batch: int) -> str:
    """config.pbtxt for the ONNX Runtime backend: batch dimension implicit, dynamic batching."""
    h, w, c = meta["input"]["shape"][1:]
    dtype = "TYPE_UINT8" if meta["input"]["dtype"] == "uint8" else "TYPE_FP32"
    entry = 'parameters {{ key: "{}" value: {{ string_value: "{}" }} }}\n'
    params = "".join(entry.format(key, value) for key, value in threshold_properties(meta).items())
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch}\n"
        f'input [ {{ name: "{INPUT}" data_type: {dtype} dims: [ {h}, {w}, {c} ] }} ]\n'
        "output [\n"
        '  { name: "score" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } },\n'
        f'  {{ name: "anomaly_map" data_type: TYPE_FP32 dims: [ {h}, {w} ] }}\n'
        "]\n"
        "dynamic_batching { max_queue_delay_microseconds: 2000 }\n" + params
    )


def threshold_properties(meta: dict[str, Any]) -> dict[str, str]:
    """The saved threshold as flat string properties ({"oddeye.threshold": value, ...}, none without
    one), read back from the record with :meth:`Threshold.from_dict`: the same two keys in the ONNX
    metadata and in Triton's config.pbtxt, for tools that read no JSON."""
    if not meta.get("threshold"):
        return {}
    threshold = Threshold.from_dict(meta["threshold"], "the export record")
    return {"oddeye.threshold": repr(threshold.value), "oddeye.threshold_rule": threshold.rule}


# -- pieces --------------------------------------------------------------------------------------
def _check_images(det: Detector, run: str | Path, images: str | Path | None) -> np.ndarray:
    """The images the export is checked on, NHWC as stored: ``images``, or the run's held-out ones."""
    if images is not None:
        data = det.prepare(images)  # shape and value range checked as for scoring
        n = min(len(data), 256)
        return data.batch(np.arange(n)).permute(0, 2, 3, 1).contiguous().numpy()
    sample = det.record_.heldout_sample
    if sample is None:
        raise OddeyeError(
            f"{run}: expected held-out images in the run to check the export against (runs made "
            "before they were kept have none), found none; pass --images with a few of the training images"
        )
    return sample


def _input_dtype(det: Detector) -> InputDtype:
    return input_dtype(det.normalisation_.lo, det.normalisation_.hi)


def _write_graph(det: Detector, check: np.ndarray, path: Path) -> None:
    wrapper = Exported(det.model_.eval(), det.normalisation_).eval()
    example = torch.from_numpy(np.ascontiguousarray(check[:2].astype(_input_dtype(det))))
    if len(example) < 2:
        example = torch.cat([example, example])  # batch 1 would be taken for a constant
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    logs = io.StringIO()
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx"):  # its chatter is not ours
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with (
            torch.no_grad(),
            contextlib.redirect_stdout(logs),
            contextlib.redirect_stderr(logs),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes={"images": {0: batch}},
                verbose=False,
            )
            program.save(str(path))
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; one line for the user
        raise OddeyeError(
            f"{det.detector}: expected an ONNX graph, found the exporter failing: {first_line(e)}"
        ) from None
    _check_graph(path, det.detector)


def _check_graph(path: Path, detector: str) -> None:
    """The batch dimension must stay free (any batch size) and nothing may be bf16."""
    import onnx

    model = onnx.load(str(path))
    first = model.graph.input[0].type.tensor_type.shape.dim[0]
    if not first.dim_param:
        raise OddeyeError(
            f"{detector}: expected a graph for any batch size, found one fixed to {first.dim_value} images"
        )
    bf16 = onnx.TensorProto.BFLOAT16
    typed = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    if any(t.type.tensor_type.elem_type == bf16 for t in typed) or any(
        i.data_type == bf16 for i in model.graph.initializer
    ):
        raise OddeyeError(
            f"{detector}: expected a graph without bf16 (ONNX Runtime's CPU has none), found bf16"
        )


def check_parity(det: Detector, path: Path, check: np.ndarray, source: str, name: str = "") -> Parity:
    """onnxruntime against ``oddeye score`` on ``check``: scores within ``TOLERANCE`` and flags at
    the saved threshold identical, at two batch sizes; an OddeyeError otherwise. (An image whose
    score is within the tolerance of the threshold itself is a tie that no two engines can promise
    to round alike; it is counted, not compared. Thresholds lie between held-out scores, so the
    run's own held-out images are never ties.)"""
    name = name or path.name
    session = open_session(path)
    images = np.ascontiguousarray(check.astype(_input_dtype(det)))
    reference = det.score(images)  # the scoring path of `oddeye score`
    ref_maps = det.infer(images, maps=True).anomaly_maps
    try:
        scores, maps = session.run(list(OUTPUTS), {INPUT: images})
        single, _ = session.run(list(OUTPUTS), {INPUT: images[:1]})
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are its own classes
        raise OddeyeError(
            f"{name}: expected onnxruntime to run the graph, found: {first_line(e)}; nothing written"
        ) from None
    scale = np.maximum(np.abs(reference), typical_size(det))
    diff = float(np.max(np.abs(scores.astype(np.float64) - reference) / scale))
    diff = max(diff, float(abs(float(single[0]) - reference[0]) / scale[0]))
    map_scale = float(np.max(np.abs(ref_maps))) or 1.0
    map_diff = float(np.max(np.abs(maps - ref_maps)) / map_scale) if ref_maps is not None else 0.0
    flags, ties = None, 0
    if det.threshold_ is not None:
        clear = np.abs(reference - det.threshold_.value) > TOLERANCE * scale
        ties = int((~clear).sum())
        flags = bool(
            np.array_equal(det.threshold_.flag(scores)[clear], det.threshold_.flag(reference)[clear])
        )
    parity = Parity(len(images), source, diff, flags, map_diff, [len(images), 1], ties)
    if not np.isfinite(diff) or diff > TOLERANCE or flags is False:
        why = f"largest relative score difference {diff:.2e} (allowed {TOLERANCE:g})"
        why += "; flags at the saved threshold differ" if flags is False else ""
        raise OddeyeError(
            f"{name}: expected onnxruntime to score as oddeye score does on {len(images)} images, "
            f"found {why}; nothing written"
        )
    return parity


def typical_size(det: Detector) -> float:
    """What "relative" is relative to for a score near 0 (a fused z-score, a logit): the larger of
    the held-out normal scores' median size and their range, i.e. how much normal scores vary
    (1 without held-out scores). A difference that small next to that changes no ranking."""
    held = det.heldout_scores_
    if held is None or len(held) == 0:
        return 1.0
    return float(max(np.median(np.abs(held)), np.ptp(held))) or 1.0


def describe(det: Detector, run: str | Path, model_file: str, parity: Parity) -> dict[str, Any]:
    """The exported model's record (ONNX metadata and JSON): input, outputs, threshold and
    calibration (outside the graph), the build, versions and the parity check."""
    import onnx
    import onnxruntime

    h, w, c = det.input_shape_
    heldout = det.heldout_scores_
    return {
        "format": FORMAT,
        "model": model_file,
        "detector": det.detector,
        "build": det.build_.to_dict(),
        "input": {
            "name": INPUT,
            "dtype": _input_dtype(det),
            "shape": [-1, h, w, c],
            "layout": "NHWC",
        },  # fmt: skip
        "outputs": [
            {"name": "score", "dtype": "float32", "shape": [-1], "meaning": "higher = more anomalous"},
            {
                "name": "anomaly_map",
                "dtype": "float32",
                "shape": [-1, h, w],
                "meaning": det.model_.map_meaning,
            },
        ],
        "normalisation": {**det.normalisation_.to_dict(), "inside_graph": True},
        "threshold": det.threshold_.to_dict() if det.threshold_ is not None else None,
        "calibration": {
            "heldout_scores": sorted(float(s) for s in heldout) if heldout is not None else [],
            "basis": det.heldout_basis_,
            "meaning": "calibrated score = the fraction of these held-out normal scores below the score",
        },
        "heldout_stats": det.heldout_stats_,
        "parity": asdict(parity),
        "source_run": str(Path(run).resolve()),
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "oddeye": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "trained_with": det.record_.versions,
        },
    }


def _set_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    flat = {
        "oddeye": json.dumps(meta, separators=(",", ":")),
        "oddeye.format": FORMAT,
        "oddeye.detector": meta["detector"],
        "oddeye.input": f"{meta['input']['dtype']} NHWC {'x'.join(map(str, meta['input']['shape'][1:]))}",
    }
    flat.update(threshold_properties(meta))
    del model.metadata_props[:]
    for key, value in flat.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
