"""Split: seeded, stratified 8:2 then 9:1, groups kept together, small classes handled."""

from __future__ import annotations

import pandas as pd
import pytest

from lfhelpers.data.split import split_manifest
from lfhelpers.errors import DataError


def frame(counts: dict[str, int], group_every: int = 0) -> pd.DataFrame:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append({"path": f"{label}/{i}.jpg", "label": label, "group": len(rows)})
    df = pd.DataFrame(rows)
    if group_every:
        df["group"] = df.index // group_every
    return df


def test_ratios_follow_the_tutorial():
    out = split_manifest(frame({"a": 100, "b": 200}), seed=0)
    share = out["split"].value_counts(normalize=True)
    assert share["test"] == pytest.approx(0.2, abs=0.02)
    assert share["val"] == pytest.approx(0.08, abs=0.02)
    per_class = pd.crosstab(out["label"], out["split"], normalize="index")
    assert (per_class["test"] - 0.2).abs().max() < 0.03


def test_same_seed_same_split_other_seed_differs():
    df = frame({"a": 60, "b": 60})
    assert split_manifest(df, seed=7)["split"].tolist() == split_manifest(df, seed=7)[
        "split"].tolist()
    assert split_manifest(df, seed=7)["split"].tolist() != split_manifest(df, seed=8)[
        "split"].tolist()


def test_groups_never_straddle_splits():
    out = split_manifest(frame({"a": 90, "b": 90}, group_every=3), seed=1)
    assert out.groupby("group")["split"].nunique().max() == 1


def test_small_class_is_excluded_with_a_warning(caplog):
    out = split_manifest(frame({"a": 50, "tiny": 3}), seed=0, min_per_class=10)
    assert set(out.loc[out["label"] == "tiny", "split"]) == {"excluded"}
    assert "tiny" in caplog.text


def test_small_class_can_stop_the_run():
    with pytest.raises(DataError, match="tiny"):
        split_manifest(frame({"a": 50, "tiny": 3}), min_per_class=10, on_small_class="error")


def test_ten_photos_per_class_still_get_train_val_and_test():
    out = split_manifest(frame({"a": 10, "b": 11, "c": 12}), seed=0, min_per_class=10)
    assert set(out["split"]) == {"train", "val", "test"}
    assert (out["split"] == "test").sum() >= 6


def test_too_few_images_for_any_split_give_a_clear_error():
    with pytest.raises(DataError, match="min_per_class"):
        split_manifest(frame({"a": 1}), min_per_class=1)


def with_digests(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(sha256=[f"h{p}" for p in df["path"]])


def test_an_earlier_split_is_kept_and_only_new_photos_are_assigned():
    before = split_manifest(with_digests(frame({"a": 120, "b": 150})), seed=3)
    grown = with_digests(frame({"a": 140, "b": 170, "c": 30}))  # 40 new photos, one new class
    after = split_manifest(grown, seed=3, previous=before)
    old = after.merge(before[["sha256", "split"]], on="sha256", suffixes=("", "_before"))
    assert len(old) == len(before) and (old["split"] == old["split_before"]).all()
    new_c = after[after["label"] == "c"]["split"].value_counts()
    assert new_c["test"] == 6 and new_c["train"] + new_c["val"] == 24  # split as a whole
    added = after[~after["sha256"].isin(before["sha256"]) & (after["label"] != "c")]
    assert len(added) == 40 and set(added["split"]) <= {"train", "val", "test"}
    # the same new photos go to the same splits whatever else is added beside them
    again = split_manifest(with_digests(frame({"a": 130, "b": 150})), seed=3, previous=before)
    first_ten = again[~again["sha256"].isin(before["sha256"])].set_index("sha256")["split"]
    assert (added.set_index("sha256")["split"].loc[first_ten.index] == first_ten).all()


def test_new_near_duplicates_follow_their_group_and_held_out_splits_win():
    before = split_manifest(with_digests(frame({"a": 100, "b": 100})), seed=0)
    test_photo = before[before["split"] == "test"].iloc[0]
    train_photo = before[(before["split"] == "train")
                         & (before["label"] == test_photo["label"])].iloc[0]
    grown = pd.concat([before.drop(columns="split"), pd.DataFrame([
        {"path": "a/new.jpg", "label": test_photo["label"], "sha256": "hnew"}])],
        ignore_index=True)
    grown["group"] = range(len(grown))
    together = grown["path"].isin([test_photo["path"], train_photo["path"], "a/new.jpg"])
    grown.loc[together, "group"] = -1  # the new photo is a near duplicate of both
    after = split_manifest(grown, seed=0, previous=before).set_index("path")["split"]
    assert after[["a/new.jpg", train_photo["path"], test_photo["path"]]].tolist() == ["test"] * 3
    unchanged = before.set_index("path")["split"].drop([train_photo["path"]])
    assert (after.loc[unchanged.index] == unchanged).all()
