"""oddeye export: every registered detector, one ONNX graph that scores as `oddeye score` does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import oddeye
from helpers import blobs
from oddeye.detectors import available
from oddeye.errors import OddeyeError
from oddeye.export import TOLERANCE, export_onnx
from oddeye.onnx_session import open_session

pytest.importorskip("onnxruntime")
SHAPE = (12, 12, 3)


@pytest.mark.parametrize("name", available())
def test_every_detector_exports_and_scores_as_oddeye_score(name: str, trained_run, tmp_path: Path) -> None:
    run = trained_run(name).run  # trained once per session (conftest); export only reads it
    done = export_onnx(run, tmp_path / "model.onnx")
    assert done.parity.max_relative_score_difference <= TOLERANCE and done.parity.flags_identical
    session = open_session(done.onnx)
    images = np.concatenate([blobs(5, SHAPE, seed=7), blobs(4, SHAPE, seed=8, anomalous=True)])
    score, amap = session.run(["score", "anomaly_map"], {"images": images})
    det = oddeye.load(run, progress=False)
    expected = det.score(images)
    from oddeye.export import typical_size

    assert np.max(np.abs(score - expected) / np.maximum(np.abs(expected), typical_size(det))) <= TOLERANCE
    assert amap.shape == (9, 12, 12) and np.isfinite(amap).all()
    meta = json.loads(done.json.read_text())
    assert meta["input"] == {"name": "images", "dtype": "uint8", "shape": [-1, 12, 12, 3], "layout": "NHWC"}
    assert meta["threshold"]["value"] == det.threshold_.value  # outside the graph
    assert len(meta["calibration"]["heldout_scores"]) == len(det.heldout_scores_)


def test_the_graph_keeps_thresholds_out_and_metadata_in(trained_run, tmp_path: Path) -> None:
    import onnx

    run = trained_run("cnn").run
    done = export_onnx(run, tmp_path / "m.onnx")
    model = onnx.load(str(done.onnx))
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props["oddeye"])
    assert (
        props["oddeye.format"] == "oddeye-onnx/1"
        and float(props["oddeye.threshold"]) == meta["threshold"]["value"]
    )
    assert [o.name for o in model.graph.output] == ["score", "anomaly_map"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # any batch size
    assert not any(i.data_type == onnx.TensorProto.BFLOAT16 for i in model.graph.initializer)


def test_a_failed_check_leaves_no_file(trained_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import oddeye.export as export

    run = trained_run("cnn").run
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # nothing can pass
    with pytest.raises(OddeyeError, match=r"m.onnx: expected onnxruntime to score as oddeye score does"):
        export_onnx(run, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_runs_without_held_out_images_need_images_to_check_on(trained_run, tmp_path: Path) -> None:
    run = Path(shutil.copytree(trained_run("cnn").run, tmp_path / "run"))
    (run / "heldout_sample.npy").unlink()
    with pytest.raises(OddeyeError, match="pass --images"):
        export_onnx(run, tmp_path / "m.onnx")
    np.save(tmp_path / "check.npy", blobs(5, SHAPE, seed=3))
    assert export_onnx(run, tmp_path / "m.onnx", images=tmp_path / "check.npy").parity.images == 5


def test_triton_repository(trained_run, cli, tmp_path: Path) -> None:
    run = trained_run("cnn").run
    r = cli("export", run, "--format", "triton", "--out", tmp_path / "repo", "--name", "faces")
    assert r.code == 0, r.err
    model = tmp_path / "repo" / "faces"
    assert sorted(p.name for p in model.rglob("*")) == ["1", "config.pbtxt", "model.onnx", "oddeye.json"]
    config = (model / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "max_batch_size: 64" in config
    assert "dims: [ 12, 12, 3 ]" in config and "dynamic_batching" in config and "oddeye.threshold" in config
    assert "checked with onnxruntime" in r.out


def test_export_on_the_command_line(trained_run, cli, tmp_path: Path) -> None:
    run = trained_run("cnn").run  # every detector's export is checked above; here the command
    r = cli("export", run, "--out", tmp_path / "cnn.onnx")
    assert r.code == 0 and "flags at the saved threshold identical" in r.out
    r = cli("export", tmp_path / "nope", "--out", tmp_path / "x.onnx")
    assert r.code == 2 and r.err.count("\n") == 1 and not (tmp_path / "x.onnx").exists()


def test_a_default_that_chose_to_compare_a_textures_patches_anywhere_exports_with_parity(
    tmp_path: Path,
) -> None:
    from helpers import stripes
    from oddeye.export import typical_size

    det = oddeye.train(stripes(60), "default", tmp_path / "run", progress=False)
    assert det.model_.detectors[-1].matching == "anywhere"
    done = export_onnx(tmp_path / "run", tmp_path / "model.onnx")  # checked on the held-out images
    assert done.parity.max_relative_score_difference <= TOLERANCE and done.parity.flags_identical
    images = stripes(6, seed=5)
    score, _ = open_session(done.onnx).run(["score", "anomaly_map"], {"images": images})
    expected = det.score(images)
    # one sine grating: a patch's nearest is almost itself, a distance small beside the patch's length,
    # where float32's |q|^2 + |b|^2 - 2 q.b keeps fewer digits (scikit-image's textures: 1e-6; this
    # grating 1.6e-3 on an AVX-512 Xeon, where the held-out images of the export's own check: 1.4e-4)
    assert np.max(np.abs(score - expected) / np.maximum(np.abs(expected), typical_size(det))) <= 5e-3
