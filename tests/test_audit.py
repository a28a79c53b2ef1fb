"""Audit: quality flags, cross-class duplicates, label issues; reports only, never changes data."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from lfhelpers.audit.labels import choose_embedder, confident_learning, out_of_fold_proba
from lfhelpers.audit.report import AUDIT, audit_dataset, photo_stats
from lfhelpers.cli import main
from lfhelpers.data import prepare_dataset, read_manifest
from lfhelpers.data.clean import CACHE
from lfhelpers.data.fixtures import draw_item, make_synthetic_dataset
from lfhelpers.data.quality import QualityThresholds, image_stats, quality_findings
from lfhelpers.errors import ConfigError

CONTRACT = ["path", "label", "issue", "score", "suggested_label"]


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _photo(seed: int, label: str = "ball") -> Image.Image:
    return draw_item(label, size=160, seed=seed)


def _defects(seed: int) -> dict[str, Image.Image]:
    """One defective drawn item per issue (each from its own drawing: a darkened copy of a
    photo in the set would be a near duplicate of it)."""
    imgs = [_photo(seed + k) for k in range(6)]
    arr = [np.asarray(img).astype(np.float32) for img in imgs]
    rng = np.random.default_rng(seed)
    return {
        "blurry": imgs[0].filter(ImageFilter.GaussianBlur(4)),
        "dark": Image.fromarray((arr[1] * 0.15).astype(np.uint8)),
        "light": Image.fromarray((255 - (255 - arr[2]) * 0.15).astype(np.uint8)),
        "low_information": Image.fromarray(np.clip(
            arr[3].reshape(-1, 3).mean(0) + rng.normal(0, 2, arr[3].shape), 0, 255
        ).astype(np.uint8)),
        "odd_aspect_ratio": imgs[4].resize((320, 40)),
        "grayscale": imgs[5].convert("L").convert("RGB"),
    }


@pytest.fixture(scope="module")
def defect_set(tmp_path_factory):
    """A raw set of drawn items plus one photo per defect, cleaned."""
    root = tmp_path_factory.mktemp("audit")
    raw = root / "raw"
    make_synthetic_dataset(raw, n_per_class=12, size=128, seed=7, labels=["ball", "card"])
    for kind, img in _defects(101).items():
        img.save(raw / "ball" / f"defect_{kind}.png")
    before = tree_digest(raw)
    prepare_dataset(raw, root / "clean", seed=1, min_per_class=5, progress=False)
    return raw, root / "clean", before


def test_each_injected_defect_is_flagged_with_its_issue(defect_set):
    _, clean, _ = defect_set
    report = audit_dataset(clean, labels=False, progress=False)
    found = set(zip(report.findings["path"].map(lambda p: Path(p).stem),
                    report.findings["issue"], strict=True))
    for kind in _defects(101):
        assert (f"defect_{kind}", kind) in found, kind
    assert (report.findings["score"].between(0, 1)).all()


def test_audit_csv_has_the_contract_columns_and_changes_nothing(defect_set):
    raw, clean, before = defect_set
    manifest = (clean / "manifest.csv").read_bytes()
    report = audit_dataset(clean, labels=False, progress=False)
    table = pd.read_csv(clean / AUDIT, keep_default_na=False)
    assert list(table.columns[:5]) == CONTRACT
    assert len(table) == len(report.findings) > 0
    assert (clean / "manifest.csv").read_bytes() == manifest
    assert tree_digest(raw) == before
    assert report.label_method.startswith("label issues not asked for")


def test_statistics_come_from_the_cleanup_cache_or_are_measured_once(defect_set, tmp_path):
    _, clean, _ = defect_set
    stats, measured = photo_stats(clean, progress=False)
    assert measured == 0 and len(stats) == len(read_manifest(clean))
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(clean, copy)
    (copy / CACHE).unlink()
    again, measured = photo_stats(copy, progress=False)
    assert measured == len(stats)
    assert photo_stats(copy, progress=False)[1] == 0
    merged = stats.merge(again, on="path", suffixes=("", "_file"))
    # measured from the clean file (reduced-scale decode) or in the cleanup pass: close
    assert np.allclose(merged["bright_p95"], merged["bright_p95_file"], atol=0.05)


def test_thresholds_are_tunable_and_checked():
    stats = pd.DataFrame([{"path": "a.png", "label": "x", **image_stats(_photo(3))}])
    assert quality_findings(stats).empty
    strict = QualityThresholds(blurry=100.0)
    assert list(quality_findings(stats, strict)["issue"]) == ["blurry"]
    with pytest.raises(ConfigError):
        QualityThresholds(dark=0)


def test_the_same_photo_under_two_labels_is_a_label_conflict(tmp_path):
    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=8, size=96, seed=2, labels=["ball", "card"])
    twin = Image.open(raw / "ball" / "ball_003.jpg").convert("RGB")
    twin.save(raw / "card" / "looks_like_ball.png")
    report = prepare_dataset(raw, tmp_path / "clean", seed=1, min_per_class=4, progress=False)
    conflict = report.rejects[report.rejects["reason"] == "label_conflict"]
    assert len(conflict) == 1
    assert "'ball'" in conflict["detail"].iloc[0] and "'card'" in conflict["detail"].iloc[0]
    findings = audit_dataset(tmp_path / "clean", labels=False, progress=False).findings
    dup = findings[findings["issue"] == "cross_class_duplicate"]
    pairs = set(zip(dup["label"], dup["suggested_label"], strict=True))
    assert {("card", "ball"), ("ball", "card")} <= pairs


def _blobs(n_per_class: dict[str, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = {lab: rng.normal(0, 3, 16) for lab in n_per_class}
    x = np.vstack([centres[lab] + rng.normal(0, 1, (n, 16)) for lab, n in n_per_class.items()])
    y = np.concatenate([[lab] * n for lab, n in n_per_class.items()]).astype(object)
    return x, y


def test_confident_learning_finds_flipped_labels_with_a_small_korean_class():
    x, truth = _blobs({"열쇠": 120, "phone": 120, "카드": 12}, seed=0)
    noisy = truth.copy()
    rng = np.random.default_rng(1)
    flipped = rng.choice(len(noisy), 12, replace=False)
    for i in flipped:
        noisy[i] = next(lab for lab in ("열쇠", "phone", "카드") if lab != truth[i])
    proba, classes = out_of_fold_proba(x, noisy.astype(str), seed=0)
    found = confident_learning(noisy.astype(str), proba, classes)
    top = found.head(len(flipped))
    assert len(set(top["index"]) & set(flipped)) >= 0.8 * len(flipped)
    right = [truth[i] == s for i, s in zip(top["index"], top["suggested_label"], strict=True)
             if i in set(flipped)]
    assert np.mean(right) >= 0.8
    assert found["score"].is_monotonic_decreasing


def test_label_part_is_skipped_with_a_reason_without_weights(defect_set, tmp_path, monkeypatch):
    _, clean, _ = defect_set
    for var in ("LF_XCEPTION_WEIGHTS", "LF_MOBILENET_WEIGHTS", "LF_DATA_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.chdir(tmp_path)
    embedder, note = choose_embedder("auto", "auto")
    if embedder is not None:
        pytest.skip("backbone weights are installed in models/weights of the package")
    assert "skipped" in note and "weights" in note
    report = audit_dataset(clean, progress=False, cache_dir=tmp_path / "cache")
    assert "skipped" in report.label_method
    assert not report.findings.empty


def test_audit_command_writes_audit_csv(defect_set, capsys):
    _, clean, _ = defect_set
    assert main(["audit", str(clean), "--backbone", "none", "--quiet", "--blurry", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "blurry" in out and "audit.csv" in out
    assert (clean / AUDIT).is_file()


def test_label_issues_with_real_weights(tmp_path):
    import os

    if not os.environ.get("LF_MOBILENET_WEIGHTS"):
        pytest.skip("needs the MobileNet ImageNet weights: set LF_MOBILENET_WEIGHTS")
    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, n_per_class=16, size=96, seed=4, labels=["ball", "card", "key"])
    moved = raw / "card" / "was_ball.png"
    Image.open(raw / "ball" / "ball_005.jpg").save(moved)
    (raw / "ball" / "ball_005.jpg").unlink()
    prepare_dataset(raw, tmp_path / "clean", seed=1, min_per_class=5, progress=False)
    report = audit_dataset(tmp_path / "clean", backbone="mobilenet", progress=False,
                           cache_dir=tmp_path / "cache")
    issues = report.findings[report.findings["issue"] == "label_issue"]
    hit = issues[issues["path"].str.contains("was_ball")]
    assert len(hit) == 1 and hit["suggested_label"].iloc[0] == "ball"


def test_findings_marked_keep_are_no_longer_listed(defect_set, tmp_path):
    import shutil

    _, clean, _ = defect_set
    copy = tmp_path / "clean"
    shutil.copytree(clean, copy)
    first = audit_dataset(copy, labels=False, progress=False).findings
    dark = first.loc[first["issue"] == "dark", "path"].iloc[0]
    pd.DataFrame([{"path": dark, "action": "keep", "new_label": "", "note": "night photo"}]
                 ).to_csv(copy / "corrections.csv", index=False)
    again = audit_dataset(copy, labels=False, progress=False).findings
    assert dark not in set(again["path"])
    assert len(again) == len(first) - (first["path"] == dark).sum()
