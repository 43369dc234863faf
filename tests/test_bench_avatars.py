"""The avatars benchmark's data: MVTec AD layout, exact masks, determinism (needs node and npm)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oddeye.bench import avatars_data as av
from oddeye.data import load_images
from oddeye.errors import OddeyeError

REPO_MODULES = Path(__file__).resolve().parents[1] / av.AVATARS_NPM_DIR


@pytest.fixture(scope="session")
def modules(request: pytest.FixtureRequest) -> Path:
    """A folder with the pinned npm packages: the repository's (make bench-data), or installed
    once into pytest's cache; the tests skip without node or without the packages."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the avatars are drawn by node")
    if av.node_modules_ok(REPO_MODULES):
        return REPO_MODULES
    cached = request.config.cache.mkdir("npm-avatars")
    try:
        return av.install_modules(cached)
    except OddeyeError as e:
        pytest.skip(f"the npm packages are absent and could not be installed: {e}")


@pytest.fixture(scope="module")
def tiny(modules: Path, tmp_path_factory: pytest.TempPathFactory) -> av.Category:
    """64x64: 6 training images, 3 normal and 3 anomalous test images (one per defect)."""
    return av.generate(tmp_path_factory.mktemp("avatars"), 64, 6, 6, modules, workers=1)


def test_split_in_thirds() -> None:
    assert av.defect_counts(500) == {"mouth_vomit": 167, "graphic_skull": 167, "moustache_magnum": 166}
    todo = av.items(4, 7)
    assert [i.file for i in todo[:5]] == [f"train/good/00000{k}.png" for k in range(4)] + [
        "test/good/000000.png"
    ]
    assert sum(i.folder == "test/good" for i in todo) == 3 and sum(i.defect is not None for i in todo) == 4
    assert len({i.seed for i in todo}) == len(todo)  # no seed twice, no test seed among the training ones


def _seeds(category: av.Category) -> dict[str, str]:
    """Every file's seed, as the generator drew it."""
    rec = json.loads((category.path / "avatars.json").read_text())
    todo = av.items(rec["n_train"], rec["n_test_good"] + sum(rec["anomalous"].values()))
    return {i.file: rec["redrawn"].get(i.file, i.seed) for i in todo}


def test_layout_sizes_and_masks(tiny: av.Category, modules: Path) -> None:
    root = tiny.path
    assert root.name == "avatars64"
    assert len(list((root / "train/good").glob("*.png"))) == 6
    assert len(list((root / "test/good").glob("*.png"))) == 3
    by_name = {d.name: d for d in av.DEFECTS}
    with av.Renderer(modules, 64) as renderer:
        for name, defect in by_name.items():
            [file] = sorted((root / "test" / name).glob("*.png"))
            image = Image.open(file)
            mask_image = Image.open(root / "ground_truth" / name / f"{file.stem}_mask.png")
            assert image.mode == "RGB" and image.size == (64, 64)
            assert mask_image.mode == "L" and mask_image.size == (64, 64)
            mask = np.asarray(mask_image)
            assert set(np.unique(mask)) == {0, 255}
            assert 0.002 < (mask > 0).mean() < 0.06  # a small local part
            seed = _seeds(tiny)[f"test/{name}/{file.name}"]
            normal, odd = (
                renderer.draw(seed, defect.both),
                renderer.draw(seed, {**defect.both, **defect.part}),
            )
            assert np.array_equal(np.asarray(image), odd)  # the file is the drawing
            outside = av.difference(normal, odd)[mask == 0]
            assert outside.max() <= av.TOLERANCE  # the anomaly differs from its normal face only inside
    for file in (root / "test/good").glob("*.png"):
        assert not (root / "ground_truth" / "good").exists() and Image.open(file).size == (64, 64)


def test_same_bytes_twice_and_kept(tiny: av.Category, modules: Path, tmp_path: Path) -> None:
    again = av.generate(tmp_path, 64, 6, 6, modules, workers=2)  # other workers, same bytes
    files = sorted(p.relative_to(tiny.path) for p in tiny.path.rglob("*.png"))
    assert len(files) == 6 + 3 + 2 * 3
    assert files == sorted(p.relative_to(again.path) for p in again.path.rglob("*.png"))
    for f in files:
        assert (tiny.path / f).read_bytes() == (again.path / f).read_bytes(), f
    stamp = (again.path / "avatars.json").stat().st_mtime_ns
    assert av.generate(tmp_path, 64, 6, 6, modules).kept  # complete: kept, nothing drawn
    assert (again.path / "avatars.json").stat().st_mtime_ns == stamp
    with pytest.raises(OddeyeError, match="remove it to draw again"):
        av.generate(tmp_path, 64, 8, 6, modules)
    record = json.loads((again.path / "avatars.json").read_text())
    (again.path / "avatars.json").write_text(json.dumps({**record, "tolerance": 1}))
    with pytest.raises(OddeyeError, match="other tolerance; remove it"):
        av.generate(tmp_path, 64, 6, 6, modules)  # drawn by other rules: not taken for this one
    assert not list(tmp_path.glob(".*tmp"))  # no temporary folder left


# --------------------------------------------------------------------------------- the benchmark
def test_knn_map_is_the_difference_to_the_nearest_image() -> None:
    from oddeye.bench.classical import NearestNeighbour

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    test = train[[3]].copy()
    test[0, 1, 2] = 255 - test[0, 1, 2]  # one pixel changed: still nearest to image 3
    scores, maps = NearestNeighbour().fit(train).score_maps(test)
    expected = ((test[0].astype(np.float32) - train[3]) / 255.0) ** 2
    assert maps.shape == (1, 4, 4) and np.allclose(maps[0], expected.sum(-1))
    assert np.count_nonzero(maps) == 1 and np.isclose(scores[0], np.sqrt(maps.sum()))


class _Truth:
    """A GroundTruth stand-in: masks from an array."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = self
        self._masks = masks

    def mask(self, i: int) -> np.ndarray:
        return self._masks[i]


class _Oracle:
    """Scores each image by its mean; its map is the truth itself."""

    def __init__(self, masks: np.ndarray) -> None:
        self._masks = masks

    def score_maps(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = [int(x[0, 0, 0]) for x in images]  # each image carries its row number
        return images.reshape(len(images), -1).mean(1), self._masks[rows].astype(np.float32)


def test_streamed_scores_keep_their_order_and_maps_meet_their_masks() -> None:
    from oddeye.bench.avatars import score_streamed

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(70)
    masks = np.zeros((70, 8, 8), bool)
    masks[35:, 2:4, 2:5] = True
    order = rng.permutation(70)
    out = score_streamed(_Oracle(masks), images[order], _Truth(masks), order)
    assert np.allclose(out["scores"], images.reshape(70, -1).mean(1))  # back in the images' order
    assert out["pixels"].pixel_auroc == 1.0 and out["pixels"].aupro == pytest.approx(1.0)
    assert out["pixels"].n_regions == 35


@pytest.mark.slow  # a fresh interpreter per run
def test_bench_avatars_end_to_end(tiny: av.Category, tmp_path: Path, cli) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "avatars", "--data-dir", tiny.path.parent, "--sizes", "64", "--detectors", "knn",
            "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "avatars64-knn.json").read_text())
    assert set(record["per_defect_auroc"]) == set(av.DEFECT_NAMES)
    assert 0.0 <= record["image_auroc"] <= 1.0 and 0.0 <= record["aupro"] <= 1.0
    assert record["data_bytes"] == (6 + 6) * 64 * 64 * 3 and record["peak_rss_bytes"] > record["data_bytes"]
    assert record["git_commit"] is not None or record["versions"]["oddeye"]
    text = md.read_text()
    assert "## Avatars" in text and "| knn | classical |" in text
    r = cli("bench", "avatars", "--data-dir", tiny.path.parent, "--sizes", "64", "--detectors", "knn",
            "--validation", "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "avatars64-val-knn.json").read_text())
    assert record["protocol"] == "validation" and record["data"]["n_train"] == 4
    assert "## Avatars, validation protocol" in md.read_text() and "## Avatars: local" in md.read_text()
    missing = cli("bench", "avatars", "--data-dir", tmp_path, "--sizes", "64", "--no-save")
    assert missing.code == 2 and "make bench-data" in missing.err


def test_the_validation_protocol_holds_out_training_faces_and_marks_what_changed() -> None:
    from oddeye.bench.avatars import validation_split

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)
    rest, val, truth = validation_split(train, "x")
    assert len(rest) == 50 and len(val) == 10 and len(truth) == 10
    rows = {r.tobytes() for r in train}
    assert all(r.tobytes() in rows for r in rest) and all(v.tobytes() in rows for v in val[:5])  # as they are
    assert truth.labels[:5].tolist() == [0] * 5 and truth.labels[5:].sum() >= 4
    for i in range(5, 10):
        source = train[np.flatnonzero([(t == val[i]).mean() > 0.5 for t in train])[0]]
        changed = np.abs(val[i].astype(int) - source)
        assert (changed.max(-1) > 0)[truth.masks.mask(i)].all()  # the mask is where pixels changed
    again = validation_split(train, "x")
    np.testing.assert_array_equal(again[1], val)  # seeded: the same every run


def test_marks_are_a_scratch_a_stain_and_a_missing_part_masked_where_pixels_changed() -> None:
    from oddeye.bench.avatars import MARKS, marks, validation_split

    faces = np.full((6, 64, 64, 3), 255, np.uint8)  # white background
    faces[:, 16:48, 16:48] = (200, 120, 40)  # an orange square "face"
    out, masks, kinds = marks(faces, np.random.default_rng(0))
    assert kinds == list(MARKS) * 2 and out.dtype == np.uint8 and masks.shape == (6, 64, 64)
    changed = np.abs(out.astype(int) - faces).max(-1) > 12
    np.testing.assert_array_equal(masks, changed)
    assert all(m.any() for m, k in zip(masks, kinds) if k != "missing")  # (a part missing from the
    # white background changes nothing: validation_split counts such an image as normal)
    for i, kind in enumerate(kinds):
        share = masks[i].mean()
        if kind == "scratch":  # thin: at most a few pixels wide over <= 40% of the side
            assert share < 0.05
        if kind == "missing":  # filled with the border's colour: white where it covers the face
            assert (out[i][masks[i]] == 255).all()
    gray = marks(faces[..., :1].copy(), np.random.default_rng(0))[0]
    assert gray.shape == (6, 64, 64, 1)  # gray images keep their one channel

    train = np.random.default_rng(1).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    rest, val, truth = validation_split(train, "x", "marks")
    blobs = validation_split(train, "x")
    np.testing.assert_array_equal(rest, blobs[0])  # the same faces held out as for the blobs
    np.testing.assert_array_equal(val[:5], blobs[1][:5])
    assert truth.defects[:5] == ("good",) * 5 and set(truth.defects[5:]) <= set(MARKS)
    with pytest.raises(OddeyeError, match="--validation: expected one of"):
        validation_split(train, "x", "dots")


def test_bench_avatars_at_a_size_reads_its_own_category_from_a_mapped_copy(
    modules: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oddeye.bench import avatars as bench

    data = tmp_path / "data"
    cat = av.generate(data, 64, 9, 6, modules, workers=1, name=av.category_name(64, 9))
    assert cat.path.name == "avatars64-n9" and av.generate(data, 64, 9, 6, modules, name="avatars64-n9").kept
    monkeypatch.setattr(bench, "LARGE_SET", 4)  # 9 images: a "large" set, read from a .npy copy
    first = bench.training_images(cat.path, tmp_path / "scratch")
    assert isinstance(first, np.memmap) and first.shape == (9, 64, 64, 3)
    np.testing.assert_array_equal(first, load_images(cat.path / "train" / "good", progress=False).array)
    assert (tmp_path / "scratch" / "avatars64-n9-train.npy").is_file()
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "avatars", "--data-dir", data, "--sizes", "64", "--n", "9", "--detectors",
            "knn,pixel-knn", "--set", "max_bank=4", "--full-bank", "--results-dir", results,
            "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "avatars64-n9-knn.json").read_text())
    assert record["n"] == 9 and record["dataset"] == "avatars64-n9" and record["data"]["n_train"] == 9
    own = json.loads((results / "avatars64-n9-pixel-knn-max_bank-4.json").read_text())
    full = json.loads(
        (results / "avatars64-n9-pixel-knn-max_bank-4-every-image-in-the-banks.json").read_text()
    )
    assert full["full_bank_of"] == own["label"] and full["invocation"] == own["invocation"]
    assert full["settings"]["params"]["max_bank"] == 9 and own["settings"]["params"]["max_bank"] == 4
    text = md.read_text()
    assert f"- pixel-knn-max_bank-4 (avatars64): **{own['image_auroc']:.4f}** against" in text
    assert "## Avatars at the homework's size (`oddeye bench avatars --n 9`)" in text
    assert "## Avatars: local" not in text  # a size of its own: not a column of the main table
    missing = cli("bench", "avatars", "--data-dir", data, "--sizes", "64", "--n", "140001", "--no-save")
    assert missing.code == 2 and "make bench-data-homework" in missing.err


def test_bench_homework_on_the_avatars_reports_the_runs_quality(modules: Path, tmp_path: Path, cli) -> None:
    data = tmp_path / "data"
    av.generate(data, 64, 9, 6, modules, workers=1, name=av.category_name(64, 9))
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "homework", "--n", "9", "--data", "avatars", "--avatars-dir", data,
            "--data-dir", tmp_path / "scratch", "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    (path,) = results.iterdir()
    record = json.loads(path.read_text())
    assert record["data"] == "avatars64-n9" and record["n_test"] == 6 and 0 <= record["image_auroc"] <= 1
    assert set(record["per_defect_auroc"]) == set(av.DEFECT_NAMES)
    assert "image AUROC on avatars64-n9" in r.out and "| avatars64-n9 | **" in md.read_text()
    assert np.load(tmp_path / "scratch" / "avatars64-n9-test.npy").shape == (6, 64, 64, 3)
    wrong = cli("bench", "homework", "--n", "9", "--data", "avatars", "--avatars-dir", tmp_path, "--no-save")
    assert wrong.code == 2 and "make bench-data-homework" in wrong.err


def test_a_contamination_pool_draws_seeds_no_category_draws() -> None:
    pool = av.items(0, 600, av.STRAYS_PREFIX)
    assert not any(i.folder.startswith("train") for i in pool)
    assert sum(i.defect is not None for i in pool) == 300
    assert all(i.seed.startswith("strays-") for i in pool)
    assert not {i.seed for i in pool} & {i.seed for i in av.items(3000, 19_999)}  # never a benchmark face
    assert av.strays_name(256) == "avatars256-strays"


def test_a_pool_of_no_faces_is_refused_in_one_line(tmp_path: Path, cli) -> None:
    r = cli("bench", "avatars-data", "--size", "64", "--strays", "0", "--out", tmp_path)
    assert r.code == 2 and "--strays: expected at least 1 face to draw, found 0" in r.err
    assert not list(tmp_path.iterdir())


def _fake_pool(root: Path, size: int = 16, per_defect: int = 2) -> Path:
    """A category ``avatarsSIZE`` (its avatars.json only) and a pool beside it whose faces are one flat
    colour per defect (20, 40, 60 for the three), so a planted face tells its defect."""
    category = root / f"avatars{size}"
    category.mkdir(parents=True)
    (category / "avatars.json").write_text(json.dumps({"size": size}))
    pool = root / av.strays_name(size)
    (pool / "avatars.json").parent.mkdir(parents=True)
    (pool / "avatars.json").write_text("{}")
    for k, defect in enumerate(av.DEFECT_NAMES):
        (pool / "test" / defect).mkdir(parents=True)
        for i in range(per_defect):
            face = np.full((size, size, 3), 20 * (k + 1), np.uint8)
            face[0, 0] = i  # each face its own
            Image.fromarray(face).save(pool / "test" / defect / f"{i:06d}.png")
    return category


def test_contamination_plants_faces_of_the_pool_and_says_which(tmp_path: Path) -> None:
    from oddeye.bench.avatars import contaminated
    from oddeye.bench.oneclass import contaminate

    category = _fake_pool(tmp_path)
    train = np.full((20, 16, 16, 3), 255, np.uint8)
    images, planted = contaminated(train, category, 0.25, seed=0)
    changed = np.flatnonzero((images != 255).any((1, 2, 3)))
    assert len(changed) == 5 and sum(planted.values()) == 5 and set(planted) == set(av.DEFECT_NAMES)
    colours = images[changed, 1, 1, 0].tolist()
    assert {d: colours.count(20 * (k + 1)) for k, d in enumerate(av.DEFECT_NAMES)} == planted
    # the positions every benchmark's draw picks for these sizes, seed, key and fraction
    _, positions = contaminate(train, np.zeros((6, 16, 16, 3), np.uint8), 0.25, 0, category.name)
    np.testing.assert_array_equal(changed, positions)
    np.testing.assert_array_equal(contaminated(train, category, 0.25, seed=0)[0], images)  # seeded
    assert (train == 255).all()  # the caller's set as it was
    with pytest.raises(OddeyeError, match="expected at least 9 faces in avatars16-strays, found 6"):
        contaminated(train, category, 0.45, seed=0)
    shutil.rmtree(tmp_path / "avatars16-strays")
    with pytest.raises(OddeyeError, match="contamination pool.*make bench-data"):
        contaminated(train, category, 0.25, seed=0)


@pytest.mark.slow  # a fresh interpreter per run
def test_bench_avatars_contaminated_trains_on_planted_faces(
    tiny: av.Category, modules: Path, tmp_path: Path, cli
) -> None:
    data = tiny.path.parent
    pool = av.generate(data, 64, 0, 6, modules, workers=1, name="avatars64-strays", prefix="strays-")
    assert pool.n_train == 0 and sum(pool.anomalous.values()) == 3
    assert av.generate(data, 64, 0, 6, modules, name="avatars64-strays", prefix="strays-").kept
    with pytest.raises(OddeyeError, match="other seed_prefix"):
        av.generate(data, 64, 0, 6, modules, name="avatars64-strays")  # the pool is not a category
    results, md = tmp_path / "results", tmp_path / "BENCH.md"
    r = cli("bench", "avatars", "--data-dir", data, "--sizes", "64", "--detectors", "knn",
            "--contamination", "0,0.4", "--results-dir", results, "--markdown", md)  # fmt: skip
    assert r.code == 0, r.err
    record = json.loads((results / "avatars64-knn-contam0.4.json").read_text())
    assert record["contamination"] == 0.4 and record["replaced_images"] == {"avatars64": 2}
    assert sum(record["runs"][0]["planted"].values()) == 2
    assert (results / "avatars64-knn.json").is_file()  # the clean run, under its own name
    text = md.read_text()
    assert "## Avatars, 64x64: contaminated training sets (`--contamination`)" in text
    assert "| knn | classical | 0 |" in text and "## Avatars: local" in text
    bad = cli("bench", "avatars", "--data-dir", data, "--sizes", "64", "--contamination", "0.1",
              "--validation", "--no-save")  # fmt: skip
    assert bad.code == 2 and "--contamination: expected the test protocol" in bad.err


def test_the_time_and_memory_table_judges_each_size_by_its_own_goal() -> None:
    from oddeye.bench.report import _avatars_goal

    run = {"train_seconds": 200.0, "score_seconds": 50.0, "rss_goal_bytes": 2.88e9, "protocol": "test"}
    assert _avatars_goal({**run, "size": 64, "within_rss_goal": False}) == "-"  # no goal at 64
    assert _avatars_goal({**run, "size": 256, "within_rss_goal": False}) == "4.2 of 5 min: met"
    assert _avatars_goal({**run, "size": 256, "score_seconds": 101.0, "within_rss_goal": True}).endswith(
        "**missed**"
    )
    assert _avatars_goal({**run, "size": 1024, "within_rss_goal": True}) == "RSS within 2.88 GB: met"
    assert _avatars_goal({**run, "size": 1024, "within_rss_goal": False}).endswith("**missed**")
    assert _avatars_goal({**run, "size": 256, "protocol": "validation", "within_rss_goal": True}) == "-"
