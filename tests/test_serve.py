"""oddeye serve: the KServe v2 endpoints and /score, from an exported .onnx (no PyTorch) or a run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import oddeye
from helpers import FAST, blobs
from oddeye.serving.loadtest import Server, load_test, multipart, png, request

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
SHAPE = (12, 12, 3)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Path]:
    from oddeye.export import export_onnx

    tmp = tmp_path_factory.mktemp("serve")
    run = tmp / "faces"
    oddeye.train(blobs(60, SHAPE), "default", run, **FAST, val_fraction=0.25)
    export_onnx(run, tmp / "faces.onnx")
    return {"run": run, "onnx": tmp / "faces.onnx", "dir": tmp}


def client(model: Path, **limits):
    from fastapi.testclient import TestClient

    from oddeye.serving.app import Limits, create_app
    from oddeye.serving.backends import open_backend

    return TestClient(create_app(open_backend(model), Limits(**limits) if limits else None))


def files(*images: np.ndarray) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(images)]


NO_TORCH = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
import numpy as np
from fastapi.testclient import TestClient
from oddeye.serving.app import create_app
from oddeye.serving.backends import open_backend
from oddeye.serving.loadtest import png
c = TestClient(create_app(open_backend(sys.argv[1])))
images = np.load(sys.argv[2])
r = c.post("/score", files=[("files", (f"{i}.png", png(im), "image/png")) for i, im in enumerate(images)])
print(json.dumps({"status": r.status_code, "scores": [x["score"] for x in r.json()["results"]],
                  "torch": "torch" in sys.modules}))
"""


def test_an_exported_model_serves_without_pytorch(served) -> None:
    images = blobs(4, SHAPE, seed=5)
    np.save(served["dir"] / "four.npy", images)
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(served["onnx"]), str(served["dir"] / "four.npy")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == 200 and got["torch"] is False
    expected = oddeye.load(served["run"], progress=False).score(images)
    np.testing.assert_allclose(got["scores"], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["onnx", "run"])
def test_kserve_v2_endpoints(served, which: str) -> None:
    c = client(served[which])
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    meta = c.get("/v2/models/faces").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 12, 12, 3]}]
    assert [o["name"] for o in meta["outputs"]] == ["score", "anomaly_map"]
    assert meta["parameters"]["threshold"]["rule"] == "fpr:0.01" and meta["versions"] == ["1"]
    images = blobs(3, SHAPE, seed=6)
    body = {"id": "r1", "inputs": [{"name": "images", "shape": [3, 12, 12, 3], "datatype": "UINT8",
                                    "data": images.ravel().tolist()}]}  # fmt: skip
    r = c.post("/v2/models/faces/infer", json=body)
    assert r.status_code == 200
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert (
        r.json()["id"] == "r1" and out["score"]["shape"] == [3] and out["anomaly_map"]["shape"] == [3, 12, 12]
    )
    expected = oddeye.load(served["run"], progress=False).score(images)
    np.testing.assert_allclose(out["score"]["data"], expected, rtol=1e-4, atol=1e-4)
    only = c.post("/v2/models/faces/infer", json={**body, "outputs": [{"name": "score"}]}).json()["outputs"]
    assert [o["name"] for o in only] == ["score"]


def test_score_files_with_flags_calibration_maps_and_threshold_override(served) -> None:
    c = client(served["onnx"])
    images = np.concatenate([blobs(2, SHAPE, seed=7), blobs(2, SHAPE, seed=8, anomalous=True)])
    r = c.post("/score?maps=true", files=files(*images))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"]["source"] == "saved" and len(body["results"]) == 4
    row = body["results"][0]
    assert set(row) == {"file", "score", "calibrated", "flag", "map"} and np.asarray(row["map"]).shape == (
        12,
        12,
    )
    assert 0 <= row["calibrated"] <= 1 and row["flag"] in (0, 1)
    low = c.post("/score?threshold=-1000", files=files(*images)).json()
    assert low["threshold"]["source"] == "request" and all(x["flag"] == 1 for x in low["results"])
    assert c.post("/score?threshold=fpr:0.5", files=files(*images)).json()["threshold"]["rule"] == "fpr:0.5"
    assert c.post("/score?threshold=", files=files(*images)).json()["threshold"] == body["threshold"]  # saved
    top = c.post("/score?threshold=top:0.1", files=files(*images)).json()
    assert top["expected"] == "a value or fpr:A" and top["found"].endswith("found top:Q")
    buf = io.BytesIO()
    np.save(buf, images)
    npy = c.post(
        "/score", files=[("files", ("batch.npy", buf.getvalue(), "application/octet-stream"))]
    ).json()
    assert [x["index"] for x in npy["results"]] == [0, 1, 2, 3]
    np.testing.assert_allclose([x["score"] for x in npy["results"]], [x["score"] for x in body["results"]])


def _bad_png() -> bytes:
    return png(np.zeros((5, 7, 3), np.uint8))


@pytest.mark.parametrize(
    "method, path, kwargs, status, text",
    [
        (
            "post",
            "/score",
            {"files": [("files", ("a.txt", b"not an image", "text/plain"))]},
            415,
            "not a readable image",
        ),
        (
            "post",
            "/score",
            {"files": [("files", ("a.png", _bad_png(), "image/png"))]},
            422,
            "wrong image size",
        ),
        ("post", "/score", {"files": [("files", ("e.png", b"", "image/png"))]}, 422, "empty file"),
        ("post", "/score", {}, 422, "invalid request"),
        ("post", "/score?threshold=top:0.1", {"files": files(blobs(1, SHAPE)[0])}, 422, "bad threshold"),
        ("post", "/score?threshold=soon", {"files": files(blobs(1, SHAPE)[0])}, 422, "bad threshold"),
        ("get", "/v2/models/other", {}, 404, "no such model"),
        ("post", "/v2/models/faces/infer", {"content": b"{nope"}, 400, "not JSON"),
        ("post", "/v2/models/faces/infer", {"json": {"inputs": []}}, 400, "bad inputs"),
        (
            "post",
            "/v2/models/faces/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "images", "shape": [1, 12, 12, 3], "datatype": "FP32", "data": [0] * 432}
                    ]
                }
            },
            400,
            "wrong datatype",
        ),  # fmt: skip
        (
            "post",
            "/v2/models/faces/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "images", "shape": [1, 8, 8, 3], "datatype": "UINT8", "data": [0] * 192}
                    ]
                }
            },
            422,
            "wrong image shape",
        ),  # fmt: skip
        (
            "post",
            "/v2/models/faces/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "images", "shape": [1, 12, 12, 3], "datatype": "UINT8", "data": [0] * 5}
                    ]
                }
            },
            400,
            "does not match the shape",
        ),  # fmt: skip
        (
            "post",
            "/v2/models/faces/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "images", "shape": [1, 12, 12, 3], "datatype": "UINT8", "data": [300] * 432}
                    ]
                }
            },
            400,
            "bad values",
        ),  # fmt: skip
    ],
)
def test_bad_requests_get_a_4xx_naming_what_was_expected(served, method, path, kwargs, status, text) -> None:
    r = getattr(client(served["onnx"]), method)(path, **kwargs)
    assert r.status_code == status, r.text
    assert text in r.json()["error"] and "Traceback" not in r.text


def test_limits_on_upload_size_and_images(served) -> None:
    c = client(served["onnx"], max_upload_bytes=2000, max_images=3)
    big = c.post(
        "/score", files=[("files", ("big.npy", b"\x93NUMPY" + b"0" * 5000, "application/octet-stream"))]
    )
    assert big.status_code == 413 and big.json()["expected"].startswith("at most")
    c = client(served["onnx"], max_images=3)
    many = c.post("/score", files=files(*blobs(5, SHAPE)))
    assert many.status_code == 413 and "too many images" in many.json()["error"]


def test_the_command_serves_and_a_short_load_test_passes(served) -> None:
    with Server(served["onnx"]) as server:
        assert request(server.port, "GET", "/v2/health/ready")[0] == 200
        body, headers = multipart([("x.png", png(blobs(1, SHAPE)[0]))])
        status, data = request(server.port, "POST", "/score", body, headers)
        assert status == 200 and len(json.loads(data)["results"]) == 1
    figures = load_test(served["onnx"], blobs(8, SHAPE), clients=3, seconds=2.0, per_request=2)
    assert figures["clean"]["errors"] == 0 and figures["clean"]["requests"] > 0
    assert figures["malformed"]["errors"] == 0 and figures["malformed"]["malformed_refused_4xx"] > 0
    assert figures["ready_after"]


def test_serve_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "oddeye", "serve", str(tmp_path / "nothing.onnx")],
                       capture_output=True, text=True)  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "expected a run folder" in p.stderr


def test_images_are_read_as_training_read_them(served) -> None:
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: white, as the folder loader composites it
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    white = np.full((1, *SHAPE), 255, np.uint8)
    r = client(served["run"]).post("/score", files=[("files", ("t.png", buf.getvalue(), "image/png"))]).json()
    expected = oddeye.load(served["run"], progress=False).score(white)
    np.testing.assert_allclose(r["results"][0]["score"], expected[0], rtol=1e-5)


def test_serve_refuses_a_port_in_use_in_one_line(served) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run(
            [sys.executable, "-m", "oddeye", "serve", str(served["onnx"]), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"--host 127.0.0.1 --port {port}: expected an address to listen on, found in use" in p.stderr


def test_a_text_file_named_npy_is_said_to_be_no_npy_not_a_pickle(served) -> None:
    upload = [("files", ("t.npy", b"Id,Predicted\n0,1\n", "application/octet-stream"))]
    r = client(served["onnx"]).post("/score", files=upload)
    assert r.status_code == 422 and "t.npy: not a readable .npy" in r.json()["error"]
    assert "not a .npy file" in r.text and "pickle" not in r.text
