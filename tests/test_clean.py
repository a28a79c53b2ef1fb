"""Cleanup: every awkward input is converted or quarantined with a reason; raw stays intact."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lfhelpers.data import class_counts, ensure_manifest, prepare_dataset, read_manifest
from lfhelpers.data.checks import CleanOptions, inspect_file
from lfhelpers.data.clean import clean_dataset, read_label_map
from lfhelpers.data.split import split_manifest
from lfhelpers.errors import ConfigError, DataError


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cleaned(synthetic_raw, tmp_path_factory):
    before = tree_digest(synthetic_raw)
    out = tmp_path_factory.mktemp("clean")
    report = prepare_dataset(synthetic_raw, out, seed=1, min_per_class=5, progress=False)
    return before, out, report


def reasons(report) -> dict[str, str]:
    return {Path(s).name: r for s, r in zip(report.rejects["source"], report.rejects["reason"],
                                            strict=True)}


def test_each_bad_input_is_quarantined_with_its_reason(cleaned):
    _, out, report = cleaned
    got = reasons(report)
    assert got["zz_empty.jpg"] == "empty_file"
    assert got["zz_error_page.jpg"] == "not_an_image"
    assert got["zz_truncated.jpg"] == "truncated"
    assert got["zz_tiny.png"] == "too_small"
    assert got["zz_exact_copy.jpg"] == "exact_duplicate"
    assert got["zz_near_copy.jpg"] == "near_duplicate"
    for row in report.rejects.itertuples():
        assert (out / row.quarantine).is_file(), row.quarantine
        assert row.detail
    on_disk = pd.read_csv(out / "rejects.csv")
    assert len(on_disk) == report.n_rejected


def test_awkward_but_valid_images_are_kept_as_rgb(cleaned):
    _, out, report = cleaned
    kept = {Path(s).name for s in report.manifest["source"]}
    for name in ("zz_cmyk.jpg", "zz_grey.jpg", "zz_alpha.png", "zz_16bit.png",
                 "zz_exif_rotated.jpg", "zz_palette.png"):
        assert name in kept, name
    for path in report.manifest["path"]:
        with Image.open(out / path) as im:
            assert im.mode == "RGB"


def test_raw_folder_is_byte_identical_and_counts_add_up(cleaned, synthetic_raw):
    before, _, report = cleaned
    assert tree_digest(synthetic_raw) == before
    assert report.n_clean + report.n_rejected == report.n_raw


def test_manifest_columns_and_unicode_labels(cleaned):
    _, out, _ = cleaned
    df = read_manifest(out)
    for col in ("path", "label", "split", "sha256", "phash", "group", "width", "height",
                "bytes", "source", "file"):
        assert col in df.columns
    assert "열쇠고리" in set(df["label"])
    assert all(Path(f).is_file() for f in df["file"])
    assert set(df["split"]) <= {"train", "val", "test", "excluded"}
    text = (out / "manifest.csv").read_text(encoding="utf-8")
    assert "열쇠고리/" in text


def test_rerun_skips_decoding_and_writes_the_same_manifest(cleaned, synthetic_raw):
    _, out, _ = cleaned
    first = (out / "manifest.csv").read_bytes()
    again = prepare_dataset(synthetic_raw, out, seed=1, min_per_class=5, progress=False)
    assert again.n_decoded == 0
    assert again.n_cached == again.n_raw
    assert (out / "manifest.csv").read_bytes() == first


def test_new_file_is_decoded_on_rerun(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=6, size=64, seed=5, labels=["ball", "card"])
    first = clean_dataset(raw, tmp_path / "clean", progress=False)
    Image.new("RGB", (70, 50), (10, 200, 30)).save(raw / "card" / "new.png")
    second = clean_dataset(raw, tmp_path / "clean", progress=False)
    assert second.n_decoded == 1
    assert second.n_clean == first.n_clean + 1


def _save(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.zeros((40, 40), np.uint16)
    arr[:, :20] = 32896  # 128 * 257
    arr[:, 20:] = 65535
    path = _save(Image.fromarray(arr), tmp_path / "x.png")
    img, info = inspect_file(path, CleanOptions())
    assert info["ok"]
    rgb = np.asarray(img)
    assert rgb[0, 0].tolist() == [128, 128, 128]
    assert rgb[0, 39].tolist() == [255, 255, 255]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (0, 0, 20, 40))
    img, info = inspect_file(_save(rgba, tmp_path / "a.png"), CleanOptions())
    assert info["ok"]
    assert np.asarray(img)[5, 30].tolist() == [255, 255, 255]
    assert np.asarray(img)[5, 5].tolist() == [200, 0, 0]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (80, 40), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(img, tmp_path / "r.jpg", exif=exif)
    out, info = inspect_file(path, CleanOptions())
    assert out.size == (40, 80)
    assert not info["copy_bytes"]


def test_cmyk_becomes_rgb(tmp_path):
    path = _save(Image.new("RGB", (40, 40), (255, 0, 0)).convert("CMYK"), tmp_path / "c.jpg")
    img, info = inspect_file(path, CleanOptions())
    assert info["ok"] and img.mode == "RGB"
    r, g, b = np.asarray(img)[20, 20].tolist()
    assert r > 200 and g < 60 and b < 60


def test_decompression_bomb_is_rejected_without_crashing(tmp_path):
    path = _save(Image.new("RGB", (400, 300), (1, 2, 3)), tmp_path / "big.png")
    img, info = inspect_file(path, CleanOptions(max_pixels=10_000))
    assert img is None and info["reason"] == "too_large"


def test_unknown_extension_is_not_an_image(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    _, info = inspect_file(path, CleanOptions())
    assert info["reason"] == "not_an_image"


def test_the_cleanup_decodes_as_the_models_do(synthetic_raw):
    from lfhelpers.images import load_array

    for name in ("zz_cmyk.jpg", "zz_grey.jpg", "zz_alpha.png", "zz_16bit.png",
                 "zz_exif_rotated.jpg", "zz_palette.png"):
        path = next(synthetic_raw.glob(f"*/{name}"))
        img, info = inspect_file(path, CleanOptions())
        assert info["ok"], name
        assert np.array_equal(np.asarray(img), load_array(path)), name


def test_the_loaders_refusals_carry_the_quarantine_reason(synthetic_raw):
    import pickle

    from lfhelpers.images import ImageRefused, decode_image

    expected = {"zz_error_page.jpg": ("not_an_image", "HTML page"),
                "zz_truncated.jpg": ("truncated", "image file is truncated")}
    for name, (reason, detail) in expected.items():
        path = next(synthetic_raw.glob(f"*/{name}"))
        with pytest.raises(ImageRefused) as caught:
            decode_image(path.read_bytes())
        assert (caught.value.reason, caught.value.detail[:len(detail)]) == (reason, detail)
        _, info = inspect_file(path, CleanOptions())
        assert (info["reason"], info["detail"]) == (caught.value.reason, caught.value.detail)
        again = pickle.loads(pickle.dumps(caught.value))  # raised in joblib workers
        assert (str(again), again.reason, again.detail) == (
            str(caught.value), caught.value.reason, caught.value.detail)


def test_label_map_merges_and_drops_folders(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=6, size=64, seed=2,
                           labels=["ball", "card", "key"])
    mapping = tmp_path / "map.csv"
    mapping.write_text("folder,label\nball,지갑\ncard,지갑\nkey,\n", encoding="utf-8")
    assert read_label_map(mapping) == {"ball": "지갑", "card": "지갑", "key": None}
    report = clean_dataset(raw, tmp_path / "clean", label_map=mapping, progress=False)
    assert set(report.manifest["label"]) == {"지갑"}
    assert (tmp_path / "clean" / "지갑").is_dir()


def test_bad_label_map_is_a_clear_error(tmp_path):
    bad = tmp_path / "map.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="folder"):
        read_label_map(bad)


def test_missing_or_empty_raw_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        clean_dataset(tmp_path / "nope", tmp_path / "clean")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folder"):
        clean_dataset(tmp_path / "empty", tmp_path / "clean")


def test_clean_dir_inside_raw_is_refused(synthetic_raw):
    with pytest.raises(ConfigError, match="must not be inside"):
        clean_dataset(synthetic_raw, synthetic_raw / "clean")


def test_ensure_manifest_cleans_a_plain_folder_once(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "photos"
    make_synthetic_dataset(raw, n_per_class=12, size=64, seed=4)
    folder = ensure_manifest(raw, seed=0, cache_root=tmp_path / "cache")
    assert (folder / "manifest.csv").is_file()
    assert ensure_manifest(folder) == folder
    assert ensure_manifest(raw, seed=0, cache_root=tmp_path / "cache") == folder
    counts = class_counts(read_manifest(folder))
    assert counts["total"].sum() == 48


def test_non_ascii_file_names_survive(tmp_path):
    raw = tmp_path / "raw"
    for i in range(3):
        buf = io.BytesIO()
        Image.new("RGB", (50, 50), (i * 80, 10, 10)).save(buf, "PNG")
        (raw / "우산").mkdir(parents=True, exist_ok=True)
        (raw / "우산" / f"분실물 사진 {i}.png").write_bytes(buf.getvalue())
    report = clean_dataset(raw, tmp_path / "clean", options=CleanOptions(near_dup_distance=-1),
                           progress=False)
    assert sorted(Path(p).name for p in report.manifest["path"]) == [
        "분실물 사진 0.png", "분실물 사진 1.png", "분실물 사진 2.png"]


def test_reviewed_corrections_relabel_and_reject_without_losing_anything(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=8, size=64, seed=6, labels=["ball", "card", "key"])
    before = tree_digest(raw)
    clean = tmp_path / "clean"
    first = prepare_dataset(raw, clean, seed=1, min_per_class=4, progress=False)
    paths = dict(zip(first.manifest["source"], first.manifest["path"], strict=True))
    pd.DataFrame([
        {"path": paths["ball/ball_002.jpg"], "action": "relabel", "new_label": "열쇠",
         "note": "a key ring"},
        {"path": paths["card/card_001.jpg"], "action": "reject", "new_label": "",
         "note": "two items in one photo"},
        {"path": paths["key/key_003.jpg"], "action": "keep", "new_label": "", "note": ""},
        {"path": paths["key/key_004.jpg"], "action": "", "new_label": "", "note": "later"},
    ]).to_csv(clean / "corrections.csv", index=False)
    second = prepare_dataset(raw, clean, seed=1, min_per_class=4, progress=False)
    assert tree_digest(raw) == before
    df = read_manifest(clean)
    row = df[df["source"] == "ball/ball_002.jpg"].iloc[0]
    assert (row["label"], row["original_label"]) == ("열쇠", "ball")
    assert (clean / row["path"]).is_file() and row["path"].startswith("열쇠/")
    assert set(df.loc[df["source"] != "ball/ball_002.jpg", "original_label"]) == {""}
    rejected = second.rejects.set_index("source").loc["card/card_001.jpg"]
    assert rejected["reason"] == "rejected_by_review"
    assert rejected["detail"] == "two items in one photo"
    assert (clean / rejected["quarantine"]).is_file()
    assert second.n_clean == first.n_clean - 1 and second.n_relabelled == 1
    manifest = (clean / "manifest.csv").read_bytes()
    third = prepare_dataset(raw, clean, seed=1, min_per_class=4, progress=False)
    assert (clean / "manifest.csv").read_bytes() == manifest
    assert third.n_decoded == 0 and tree_digest(raw) == before


def test_bad_corrections_file_is_a_clear_error(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=5, size=64, seed=6, labels=["ball", "card"])
    bad = tmp_path / "fix.csv"
    bad.write_text("path,action,new_label,note\nball/ball_000.jpg,rename,x,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown action"):
        clean_dataset(raw, tmp_path / "clean", corrections=bad, progress=False)
    bad.write_text("path,action,new_label,note\nball/ball_000.jpg,relabel,,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="new_label"):
        clean_dataset(raw, tmp_path / "clean", corrections=bad, progress=False)


def test_one_class_set_says_a_classifier_needs_two(tmp_path, caplog, capsys):
    from lfhelpers.cli import main
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=12, size=64, seed=6, labels=["ball"])
    with caplog.at_level("WARNING"):
        assert main(["clean", str(raw), "--out", str(tmp_path / "clean")]) == 0
    text = caplog.text
    assert "one class ('ball')" in text and "at least two classes" in text
    assert "<label>" in text


#: A ``manifest.csv`` some other tool wrote: no path/label/split columns.
FOREIGN_MANIFEST = "filename,category,notes\nball/a.jpg,ball,from the vendor\n"


def test_a_foreign_manifest_is_ignored_with_a_logged_line(tmp_path, caplog):
    from lfhelpers.data import is_project_manifest, list_photos
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "photos"
    make_synthetic_dataset(raw, n_per_class=12, size=48, seed=2, labels=["ball", "열쇠고리"])
    (raw / "manifest.csv").write_text(FOREIGN_MANIFEST, encoding="utf-8")
    assert not is_project_manifest(raw / "manifest.csv")
    with caplog.at_level("WARNING", logger="lfhelpers"):
        photos = list_photos(raw)
    assert sorted(set(photos["label"])) == ["ball", "열쇠고리"] and len(photos) == 24
    assert "not a manifest of this project" in caplog.text and "filename" in caplog.text
    assert "class sub-folders" in caplog.text
    with pytest.raises(DataError, match="not a manifest of this project.*clean"):
        read_manifest(raw)
    folder = ensure_manifest(raw, seed=0, cache_root=tmp_path / "cache")  # notebooks' path
    assert folder != raw and is_project_manifest(folder / "manifest.csv")
    assert len(list_photos(folder)) == len(read_manifest(folder, ["train", "val", "test"]))


def test_a_verb_that_needs_a_clean_set_names_a_foreign_manifest(tmp_path, capsys):
    from lfhelpers.cli import main

    folder = tmp_path / "photos"
    (folder / "ball").mkdir(parents=True)
    (folder / "manifest.csv").write_text(FOREIGN_MANIFEST, encoding="utf-8")
    assert main(["audit", str(folder), "--backbone", "none", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a manifest of this project" in err and "lfhelpers clean" in err
    assert "Traceback" not in err and "KeyError" not in err


def test_adding_photos_keeps_the_split_of_the_photos_already_there(tmp_path):
    from lfhelpers.data.fixtures import make_synthetic_dataset

    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=30, size=64, seed=2, labels=["ball", "card"])
    clean = tmp_path / "clean"
    first = prepare_dataset(raw, clean, seed=1, min_per_class=5, progress=False).manifest
    extra = tmp_path / "extra"
    make_synthetic_dataset(extra, n_per_class=6, size=64, seed=9, labels=["ball", "card"])
    for photo in extra.rglob("*.jpg"):
        shutil.copy(photo, raw / photo.parent.name / f"new_{photo.name}")
    second = read_manifest(prepare_dataset(raw, clean, seed=1, min_per_class=5,
                                           progress=False).clean_dir)
    kept = second.merge(first[["sha256", "split"]], on="sha256", suffixes=("", "_first"))
    assert len(kept) == len(first) and (kept["split"] == kept["split_first"]).all()
    assert len(second) > len(first)
    # other split settings split everything afresh
    third = prepare_dataset(raw, clean, seed=5, min_per_class=5, progress=False).manifest
    fresh = split_manifest(third.drop(columns="split"), seed=5, min_per_class=5)
    assert third["split"].tolist() == fresh["split"].tolist()
