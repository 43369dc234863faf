"""Typed detector parameters: checked and coerced, extended by subclasses, and a parameter added to a
family never changes how an older run of it loads and scores (no format change, no migration)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import oddeye
from helpers import FAST, blobs
from oddeye.detectors import get_spec, registry
from oddeye.detectors.descriptors import ShapeKNN
from oddeye.detectors.memory import PixelKNN, PixelKNNParams
from oddeye.detectors.params import param
from oddeye.errors import OddeyeError

SHAPE = (12, 12, 1)
TEST = np.concatenate([blobs(6, SHAPE, seed=3), blobs(6, SHAPE, seed=4, anomalous=True)])


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A pixel-knn run written by today's code, and its scores on TEST."""
    run = tmp_path_factory.mktemp("pixel") / "run"
    det = oddeye.train(blobs(40, SHAPE), "pixel-knn", run, **FAST)
    return run, det.score(TEST)


# -- a newcomer adds a parameter -----------------------------------------------------------------
@dataclass(frozen=True)
class PlusParams(PixelKNNParams):
    power: float = param(2.0, before=1.0, help="scores raised to this power")


class PixelKNNPlus(PixelKNN):
    """pixel-knn with one more parameter, as a later version of the code might have it."""

    Params = PlusParams

    def infer(self, x: torch.Tensor, maps: bool = False):
        out = super().infer(x, maps)
        out.score = out.score.pow(self.params.power)
        return out


@pytest.fixture
def pixel_knn_plus(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's pixel-knn replaced by :class:`PixelKNNPlus` for one test."""
    spec = registry.get_spec("pixel-knn")
    monkeypatch.setitem(
        registry._REGISTRY, "pixel-knn", registry.DetectorSpec(spec.name, spec.description, PixelKNNPlus)
    )


def test_an_added_parameter_leaves_older_runs_scoring_as_written(pixel_run, pixel_knn_plus, tmp_path) -> None:
    run, scores = pixel_run
    assert "power" not in json.loads((run / "model.json").read_text())["params"]  # written before it
    det = oddeye.load(run, progress=False)
    assert det.build_.params["power"] == 1.0  # its ``before``: what the older code did
    np.testing.assert_array_equal(det.score(TEST), scores)
    meta = json.loads((det.save(tmp_path / "again") / "model.json").read_text())
    assert meta["format"] == "oddeye-run/7" and meta["params"]["power"] == 1.0  # the format is unchanged

    new = oddeye.create("pixel-knn", progress=False).fit(blobs(40, SHAPE))
    assert new.build_.params["power"] == 2.0  # new runs get the new default, and record it
    np.testing.assert_allclose(new.score(TEST), scores**2, rtol=1e-5)
    assert oddeye.create("pixel-knn", power=3, progress=False).build((8, 8, 1)).params.power == 3.0


def test_a_field_without_before_is_required_in_a_record(pixel_run, tmp_path) -> None:
    broken = Path(shutil.copytree(pixel_run[0], tmp_path / "broken"))
    meta = json.loads((broken / "model.json").read_text())
    del meta["params"]["blur"]  # pixel-knn has had ``blur`` from its first run on
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(OddeyeError, match="no value for parameter 'blur'") as info:
        oddeye.load(broken)
    assert "model.json" in str(info.value) and "\n" not in str(info.value)


# -- the dataclasses -----------------------------------------------------------------------------
def test_a_subclass_extends_its_parents_parameters_and_derivations() -> None:
    assert ShapeKNN.Params.names() == [*PixelKNN.Params.names(), "foreground"]
    assert ShapeKNN.Derived is PixelKNN.Derived
    model = get_spec("shape-knn").build((64, 64, 1), {"blur": 0.05, "foreground": 0.1})
    assert (model.params.blur, model.params.foreground, model.derived.sigma) == (0.05, 0.1, 3.2)


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("pixel-knn", {"k": "three"}, "parameter k: expected an integer, found 'three'"),
        ("pixel-knn", {"k": True}, "parameter k: expected an integer"),
        ("pixel-knn", {"blur": [1]}, "parameter blur: expected a number"),
        ("transform", {"flips": 1}, "parameter flips: expected true or false"),
        ("cnn", {"channels": "8,x"}, "parameter channels: expected a comma-separated list of int"),
        ("cnn", {"channels": 8}, "parameter channels: expected a list"),
        ("boss", {"score": "loudest"}, "parameter score must be one of classifier, reconstruction, both"),
        ("boss", {"kinds": "noise,glitter"}, "parameter kinds must be one of"),
        ("pixel-knn", {"kk": 3}, r"unknown setting 'kk' .* a parameter of pixel-knn \(k, blur, max_bank"),
    ],
)
def test_bad_parameters_are_one_line_naming_what_was_expected(name, params, message) -> None:
    with pytest.raises(OddeyeError, match=message) as info:
        oddeye.create(name, **params)  # refused when asked for, not at the first fit
    assert "\n" not in str(info.value)


def test_lossless_coercions() -> None:
    p = get_spec("cnn").resolve({"channels": "8, 16"})
    assert p.channels == (8, 16)
    assert get_spec("cnn").resolve({"channels": [4, 8]}).channels == (4, 8)
    assert get_spec("boss").resolve({"recon_weight": 0, "score": "classifier"}).recon_weight == 0.0
    assert isinstance(get_spec("boss").resolve({"recon_weight": 2}).recon_weight, float)


def test_the_cli_lists_a_bad_set_value_in_one_line(cli, homework, tmp_path) -> None:
    r = cli("train", homework["train"], "--detector", "pixel-knn", "--set", "k=lots", "--out", tmp_path / "r")
    assert r.code == 2 and "parameter k: expected an integer, found 'lots'" in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# -- a record that asks for too much memory ------------------------------------------------------
def test_a_record_needing_more_memory_than_is_free_is_refused_before_allocating(cli, tmp_path) -> None:
    run = tmp_path / "run"
    oddeye.train(blobs(24, (8, 8, 1)), "fcn", run, epochs=1, batch_size=8, progress=False)
    meta = json.loads((run / "model.json").read_text())
    meta["params"]["hidden"] = [2**20, 2**20, 3]  # two 4 TB layers: a hostile or damaged record
    (run / "model.json").write_text(json.dumps(meta))
    np.save(tmp_path / "x.npy", blobs(2, (8, 8, 1)))
    r = cli("score", run, tmp_path / "x.npy", "--out", tmp_path / "p.csv")
    assert r.code == 2, r.err
    assert r.err.count("model.json") == 1 and "model.json: expected a model that fits in the" in r.err
    assert "found a build of fcn for 8x8x1 images that needs 8.8e+03 GB; nothing was allocated" in r.err
    assert len(r.err.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()


def test_build_bytes_counts_parameters_and_buffers_without_allocating() -> None:
    spec = get_spec("cnn-bn")
    model = spec.build((64, 64, 3), {})
    expected = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    assert spec.build_bytes(registry.record_of(model), (64, 64, 3)) == expected


def test_oddeye_detectors_name_lists_the_parameters(cli) -> None:
    r = cli("detectors", "boss")
    assert r.code == 0, r.err
    assert (
        "  score         str = both  what scores: the classifier, the error or both (one of classifier"
        in r.out
    )
    assert "  kinds         tuple[str, ...] = noise,paste," in r.out
    assert cli("detectors", "nope").code == 2


def test_resolved_params_are_every_parameter_as_it_would_be_built() -> None:
    import oddeye

    det = oddeye.create("pixel-knn", k=3)
    resolved = det.resolved_params()
    assert resolved["k"] == 3 and resolved["max_bank"] == 20000  # given, and the default
    assert det.params == {"k": 3}  # what was given is unchanged
    members = oddeye.create("default").resolved_params()["members"]
    assert isinstance(members, list) and members[0].startswith("pixel-knn")  # plain JSON values
