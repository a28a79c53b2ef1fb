"""Tests of lfhelpers.augment: class balancing of the train split by offline augmentation."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lfhelpers.augment import (
    AUG_COLUMNS,
    AugmentParams,
    augment_array,
    balance_train,
    image_rng,
    origin_splits,
    params_by_class,
    plan_balance,
    resolve_target,
    train_with_augmented,
)
from lfhelpers.data import MANIFEST_COLUMNS, read_manifest
from lfhelpers.data.fixtures import make_synthetic_dataset
from lfhelpers.errors import ConfigError, DataError

COUNTS = {"ball": 30, "card": 12, "key": 6, "열쇠고리": 20}


def _write_manifest(root: Path, seed: int = 0) -> pd.DataFrame:
    """Write a manifest.csv with a seeded stratified 70/15/15 split of every class folder."""
    rng = np.random.default_rng(seed)
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        order = rng.permutation(len(files))
        n_val = n_test = max(1, round(0.15 * len(files)))
        for rank, i in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            data = files[i].read_bytes()
            rel = f"{folder.name}/{files[i].name}"
            rows.append({"path": rel, "label": folder.name, "split": split,
                         "sha256": hashlib.sha256(data).hexdigest(), "phash": "0" * 16,
                         "group": len(rows), "width": 48, "height": 48, "bytes": len(data),
                         "source": rel})
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    frame.to_csv(root / "manifest.csv", index=False)
    return frame


@pytest.fixture(scope="module")
def clean_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    make_synthetic_dataset(root, n_per_class=COUNTS, size=48, seed=3)
    _write_manifest(root)
    return root


@pytest.fixture
def clean_dir(clean_template, tmp_path) -> Path:
    """A private copy of the clean set (tests may damage it)."""
    return Path(shutil.copytree(clean_template, tmp_path / "clean"))


def _train_counts(clean_dir: Path) -> pd.Series:
    return read_manifest(clean_dir, splits=["train"])["label"].value_counts().sort_index()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*.jpg"))}


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(clean_dir, tmp_path):
    one = balance_train(clean_dir, tmp_path / "a", seed=7, n_jobs=1, progress=False)
    two = balance_train(clean_dir, tmp_path / "b", seed=7, n_jobs=2, progress=False)
    other = balance_train(clean_dir, tmp_path / "c", seed=8, n_jobs=1, progress=False)
    files_a, files_b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert files_a and files_a == files_b
    assert (tmp_path / "a/manifest.csv").read_bytes() == (tmp_path / "b/manifest.csv").read_bytes()
    assert one.after() == two.after()
    assert _files(tmp_path / "c") != files_a
    assert other.after() == one.after()


def test_output_layout_and_manifest(clean_dir, tmp_path):
    result = balance_train(clean_dir, tmp_path / "aug", seed=0, n_jobs=1, progress=False)
    df = read_manifest(tmp_path / "aug")
    assert list(df.columns[: len(AUG_COLUMNS)]) == AUG_COLUMNS
    assert set(df["split"]) == {"train"}
    for row in df.itertuples():
        stem = Path(row.origin).stem
        assert row.path.startswith(f"{row.label}/{stem}_aug")
        assert Path(row.file).is_file()
        assert hashlib.sha256(Path(row.file).read_bytes()).hexdigest() == row.sha256
    assert result.manifest["path"].tolist() == df["path"].tolist()


def test_no_validation_or_test_image_is_used(clean_dir, tmp_path):
    manifest = read_manifest(clean_dir)
    held_out = manifest[manifest["split"] != "train"]
    # Damage every held-out file: reading any of them would fail loudly.
    for file in held_out["file"]:
        Path(file).write_bytes(b"not an image")
    result = balance_train(clean_dir, tmp_path / "aug", target="max", seed=0, n_jobs=1,
                           progress=False)
    aug = result.manifest
    assert not result.skipped
    assert set(aug["origin"]) <= set(manifest.loc[manifest["split"] == "train", "path"])
    assert not set(aug["group"].astype(str)) & set(held_out["group"].astype(str))
    assert origin_splits(manifest, aug).drop("train").sum() == 0
    combined = train_with_augmented(clean_dir, tmp_path / "aug")
    assert not set(combined["path"]) & set(held_out["path"])


def test_leak_is_refused_when_training_set_is_assembled(clean_dir, tmp_path):
    balance_train(clean_dir, tmp_path / "aug", seed=0, n_jobs=1, progress=False)
    manifest = pd.read_csv(clean_dir / "manifest.csv", keep_default_na=False)
    manifest.loc[manifest["split"] == "train", "split"] = "test"
    manifest.to_csv(clean_dir / "manifest.csv", index=False)
    with pytest.raises(DataError, match="not made from this clean train split"):
        train_with_augmented(clean_dir, tmp_path / "aug")


def test_bad_image_is_skipped_with_a_reason_and_classmates_make_up(clean_dir, tmp_path, caplog):
    train = read_manifest(clean_dir, splits=["train"])
    bad = train[train["label"] == "key"].iloc[0]
    Path(bad["file"]).write_bytes(b"<html>404</html>")
    with caplog.at_level(logging.WARNING, logger="lfhelpers.augment"):
        result = balance_train(clean_dir, tmp_path / "aug", target=20, seed=0, n_jobs=1,
                               progress=False)
    assert [path for path, _ in result.skipped] == [bad["path"]]
    assert "not a readable image" in result.skipped[0][1]
    assert any(bad["path"] in r.getMessage() and "cannot read" in r.getMessage()
               for r in caplog.records)
    assert bad["path"] not in set(result.manifest["origin"])
    assert result.after()["key"] == 20


@pytest.mark.parametrize("target", ["mean", "max", 15])
def test_each_target_mode_gives_the_counts_it_promises(clean_dir, tmp_path, target):
    before = _train_counts(clean_dir)
    goal = {"mean": round(before.mean()), "max": before.max(), 15: 15}[target]
    result = balance_train(clean_dir, tmp_path / "aug", target=target, max_copies=None, seed=0,
                           n_jobs=1, progress=False)
    assert result.target == goal
    added = result.manifest["label"].value_counts()
    for label, count in before.items():
        assert result.after()[label] == max(count, goal)
        assert added.get(label, 0) == max(goal - count, 0)
    assert result.before() == before.to_dict()


def test_classes_above_target_are_left_alone(clean_dir, tmp_path):
    result = balance_train(clean_dir, tmp_path / "aug", target="mean", seed=0, n_jobs=1,
                           progress=False)
    before = _train_counts(clean_dir)
    big = before[before >= result.target].index
    assert len(big) > 0
    assert not result.manifest["label"].isin(big).any()
    assert not any((tmp_path / "aug" / label).exists() for label in big)


def test_cap_limits_copies_per_original_with_a_warning(clean_dir, tmp_path, caplog):
    before = _train_counts(clean_dir)
    with caplog.at_level(logging.WARNING, logger="lfhelpers.augment"):
        result = balance_train(clean_dir, tmp_path / "aug", target=60, max_copies=3, seed=0,
                               n_jobs=1, progress=False)
    assert result.after()["key"] == before["key"] * 4
    assert result.summary.loc["key", "capped"]
    assert result.manifest.groupby("origin").size().max() == 3
    assert any("'key'" in r.getMessage() and "max_copies" in r.getMessage()
               for r in caplog.records)


def test_rerun_skips_when_nothing_changed_and_redoes_when_seed_changes(clean_dir, tmp_path):
    aug = tmp_path / "aug"
    first = balance_train(clean_dir, aug, seed=1, n_jobs=1, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in aug.rglob("*.jpg")}
    again = balance_train(clean_dir, aug, seed=1, n_jobs=1, progress=False)
    assert again.reused and not first.reused
    assert {p: p.stat().st_mtime_ns for p in aug.rglob("*.jpg")} == stamps
    assert again.after() == first.after()
    smaller = balance_train(clean_dir, aug, target=10, seed=1, n_jobs=1, progress=False)
    assert not smaller.reused
    listed = set(read_manifest(aug)["path"])
    assert {p.relative_to(aug).as_posix() for p in aug.rglob("*.jpg")} == listed


def test_originals_are_untouched(clean_dir, tmp_path):
    before = _files(clean_dir)
    balance_train(clean_dir, tmp_path / "aug", seed=0, n_jobs=1, progress=False)
    assert _files(clean_dir) == before


def test_refuses_to_write_into_the_clean_folder(clean_dir):
    with pytest.raises(ConfigError, match="folder of their own"):
        balance_train(clean_dir, clean_dir, progress=False)


@pytest.mark.parametrize("bad", ["median", 0, -3, "", True])
def test_invalid_target_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        resolve_target({"a": 3, "b": 5}, bad)


def test_plan_needs_train_rows():
    frame = pd.DataFrame({"path": ["a/1.jpg"], "label": ["a"], "split": ["test"]})
    with pytest.raises(DataError, match="no train rows"):
        plan_balance(frame)


def test_zero_ranges_leave_the_image_unchanged():
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    params = AugmentParams(0, 0, 0, 0, 0, horizontal_flip=False)
    assert np.array_equal(augment_array(image, image_rng(0, "x", 0), params), image)


def test_flip_alone_mirrors_exactly_half_of_the_time():
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    params = AugmentParams(0, 0, 0, 0, 0, horizontal_flip=True)
    outs = [augment_array(image, image_rng(0, "x", k), params) for k in range(40)]
    mirrored = sum(np.array_equal(o, image[:, ::-1]) for o in outs)
    assert mirrored + sum(np.array_equal(o, image) for o in outs) == 40
    assert 10 <= mirrored <= 30


def test_transform_moves_pixels_and_keeps_shape():
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    out = augment_array(image, image_rng(0, "x", 0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)


def test_keras_layers_offer_the_same_transforms():
    keras = pytest.importorskip("keras")
    from lfhelpers.augment import keras_augmentation

    model = keras_augmentation(seed=0)
    names = [type(layer).__name__ for layer in model.layers]
    expected = ["RandomRotation", "RandomTranslation", "RandomZoom", "RandomFlip"]
    if hasattr(keras.layers, "RandomShear"):
        expected.insert(2, "RandomShear")
    assert names == expected
    assert all(getattr(layer, "fill_mode", "nearest") == "nearest" for layer in model.layers)
    batch = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = np.asarray(model(batch, training=True))
    assert out.shape == batch.shape
    assert not np.allclose(out, batch)


def test_training_set_is_clean_train_plus_augmented(clean_dir, tmp_path):
    result = balance_train(clean_dir, tmp_path / "aug", seed=0, n_jobs=1, progress=False)
    combined = train_with_augmented(clean_dir, tmp_path / "aug")
    counts = combined["label"].value_counts().to_dict()
    assert counts == result.after()
    assert combined["augmented"].sum() == len(result.manifest)
    assert all(Path(f).is_file() for f in combined["file"])


def test_leftovers_of_an_interrupted_run_are_removed(clean_dir, tmp_path):
    aug = tmp_path / "aug"
    (aug / "key").mkdir(parents=True)
    (aug / "key" / "key_999_aug7.jpg").write_bytes(b"half-written")
    (aug / "key" / ".key_998_aug0.jpg.tmp").write_bytes(b"partial")
    balance_train(clean_dir, aug, seed=0, n_jobs=1, progress=False)
    assert not (aug / "key" / "key_999_aug7.jpg").exists()
    assert not (aug / "key" / ".key_998_aug0.jpg.tmp").exists()


def test_refuses_a_folder_holding_another_manifest(clean_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.csv").write_text("path,label\n")
    with pytest.raises(ConfigError, match="did not write"):
        balance_train(clean_dir, other, progress=False)


def test_comparison_grid_shows_originals_and_copies(clean_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lfhelpers.augment import comparison_grid

    result = balance_train(clean_dir, tmp_path / "aug", target=40, max_copies=None, seed=0,
                           n_jobs=1, progress=False)
    fig = comparison_grid(result.manifest, clean_dir, n_sources=2, per_source=3, seed=0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert sum(t.endswith(": original") for t in titles) == 2
    # ball's originals got 1 copy each, card's 4: rows of 1 + 3 shown copies, ball's padded.
    assert sum(t.startswith("aug") for t in titles) == 4
    assert titles.count("(no more copies)") == 2
    plt.close(fig)


def test_originals_with_the_same_stem_get_distinct_files(tmp_path):
    from PIL import Image

    from lfhelpers.augment import augment_sources

    (tmp_path / "key").mkdir()
    for name in ("a.jpg", "a.png"):
        Image.new("RGB", (24, 24), (200, 30, 30)).save(tmp_path / "key" / name)
    jobs = pd.DataFrame({"path": ["key/a.jpg", "key/a.png"], "label": "key", "n_copies": 2,
                         "file": [str(tmp_path / "key/a.jpg"), str(tmp_path / "key/a.png")]})
    rows, skipped = augment_sources(jobs, tmp_path / "aug", n_jobs=1, progress=False)
    assert not skipped
    assert rows["path"].nunique() == 4
    assert all((tmp_path / "aug" / p).is_file() for p in rows["path"])


def test_no_flip_classes_are_never_mirrored(tmp_path):
    from PIL import Image

    from lfhelpers.augment import augment_sources

    noise = np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    for label in ("card", "key"):
        (tmp_path / label).mkdir()
        Image.fromarray(noise).save(tmp_path / label / "a.png")
    jobs = pd.DataFrame({"path": ["card/a.png", "key/a.png"], "label": ["card", "key"],
                         "n_copies": 12, "file": [str(tmp_path / "card/a.png"),
                                                  str(tmp_path / "key/a.png")]})
    flip_only = AugmentParams(0, 0, 0, 0, 0, horizontal_flip=True)
    chosen = params_by_class(["card", "key"], flip_only, no_flip_classes=["card"])
    assert not chosen["card"].horizontal_flip and chosen["key"] == flip_only
    rows, _ = augment_sources(jobs, tmp_path / "aug", flip_only, n_jobs=1, progress=False,
                              class_params=chosen)

    def mirrored(path: str) -> bool:
        with Image.open(tmp_path / "aug" / path) as img:
            copy = np.asarray(img.convert("RGB"), dtype=float)
        return np.abs(copy - noise[:, ::-1]).mean() < np.abs(copy - noise).mean()

    flips = {label: [mirrored(p) for p in group["path"]] for label, group in rows.groupby("label")}
    assert len(flips["card"]) == len(flips["key"]) == 12
    assert not any(flips["card"]) and any(flips["key"])


def test_per_class_transforms_are_recorded_and_redo_the_output(clean_dir, tmp_path, caplog):
    aug = tmp_path / "aug"
    plain = balance_train(clean_dir, aug, seed=0, n_jobs=1, progress=False)
    assert json.loads((aug / "augment.json").read_text(encoding="utf-8"))["class_params"] == {}
    assert plain.after()["card"] > plain.before()["card"]  # card gets copies
    no_flip = balance_train(clean_dir, aug, seed=0, n_jobs=1, progress=False,
                            no_flip_classes=["card"])
    assert not no_flip.reused
    record = json.loads((aug / "augment.json").read_text(encoding="utf-8"))
    assert list(record["class_params"]) == ["card"]
    assert record["class_params"]["card"]["horizontal_flip"] is False
    card = no_flip.manifest["label"] == "card"
    assert no_flip.manifest[card]["sha256"].tolist() != plain.manifest[card]["sha256"].tolist()
    assert no_flip.manifest[~card]["sha256"].tolist() == plain.manifest[~card]["sha256"].tolist()
    again = balance_train(clean_dir, aug, seed=0, n_jobs=1, progress=False,
                          no_flip_classes="card")
    assert again.reused
    with caplog.at_level(logging.WARNING, logger="lfhelpers.augment"):
        params_by_class(["card", "key"], no_flip_classes=["cards"])
    assert any("'cards'" in r.getMessage() for r in caplog.records)


def test_class_params_must_be_augment_params():
    with pytest.raises(ConfigError, match="class_params"):
        params_by_class(["card"], class_params={"card": {"horizontal_flip": False}})



def test_originals_are_read_by_the_one_loader(tmp_path):
    from PIL import Image

    from lfhelpers.augment import augment_sources
    from lfhelpers.images import load_array

    (tmp_path / "key").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.new("RGB", (48, 24), (30, 90, 200)).save(tmp_path / "key" / "r.jpg", exif=exif)
    jobs = pd.DataFrame({"path": ["key/r.jpg"], "label": "key", "n_copies": 1,
                         "file": [str(tmp_path / "key" / "r.jpg")]})
    identity = AugmentParams(0, 0, 0, 0, 0, horizontal_flip=False)
    rows, skipped = augment_sources(jobs, tmp_path / "aug", identity, n_jobs=1, progress=False)
    assert not skipped
    assert (rows["width"].iloc[0], rows["height"].iloc[0]) == (24, 48)
    expected = augment_array(load_array(tmp_path / "key" / "r.jpg"),
                             image_rng(0, "key/r.jpg", 0), identity)
    with Image.open(tmp_path / "aug" / rows["path"].iloc[0]) as written:
        assert written.size == (expected.shape[1], expected.shape[0])
