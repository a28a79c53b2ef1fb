"""Notebook 03 keeps its saved classifier when little changed, and trains again otherwise."""

from __future__ import annotations

import pandas as pd
import pytest

from lfhelpers.errors import ConfigError
from lfhelpers.models.predict import labels_path
from lfhelpers.models.retrain import publish_kept, record_path, reuse_decision, write_record

SETTINGS = {"image_size": 224, "epochs": 30, "fine_tune_epochs": 3, "seed": 42}


def manifest(n_per_class: int = 100, labels=("card", "key")) -> pd.DataFrame:
    rows = [{"sha256": f"{label}{i}", "label": label,
             "split": "test" if i % 5 == 0 else "val" if i % 10 == 1 else "train"}
            for label in labels for i in range(n_per_class)]
    return pd.DataFrame(rows)


@pytest.fixture
def saved(tmp_path):
    """A 'saved model' (its bytes do not matter here) with the record of its training."""
    model = tmp_path / "models" / "m.keras"
    model.parent.mkdir()
    model.write_bytes(b"model")
    labels_path(model).write_text('{"labels": ["card", "key"]}', encoding="utf-8")
    df = manifest()
    write_record(model, df[df["split"] == "train"], SETTINGS)
    return model, df


def decide(model, df, **kwargs):
    return reuse_decision(model, df[df["split"] == "train"], df, SETTINGS, **kwargs)


def test_a_few_new_photos_keep_the_saved_model(saved):
    model, df = saved
    assert decide(model, df).keep  # nothing changed
    grown = pd.concat([df, pd.DataFrame([{"sha256": f"new{i}", "label": "key", "split": "train"}
                                         for i in range(5)])], ignore_index=True)
    decision = decide(model, grown, retrain_fraction=0.05)
    assert decision.keep and decision.n_added == 5 and "kept" in decision.reason
    assert not decide(model, grown, retrain_fraction=0.02).keep  # 5 of 140 is over 2%
    assert decide(model, grown, retrain="never", retrain_fraction=0.0).keep
    assert not decide(model, grown, retrain="always").keep


@pytest.mark.parametrize("change, why", [
    ("held_out", "now held out"),
    ("classes", "classes changed"),
    ("settings", "settings or code changed"),
    ("no_record", "no saved model"),
])
def test_what_forces_a_new_training(saved, change, why):
    model, df = saved
    settings = SETTINGS
    if change == "held_out":  # a photo it was trained on moved to the test split
        df = df.copy()
        df.loc[df.index[df["split"] == "train"][0], "split"] = "test"
    elif change == "classes":
        df = pd.concat([df, manifest(20, labels=("umbrella",))], ignore_index=True)
    elif change == "settings":
        settings = {**SETTINGS, "epochs": 10}
    else:
        record_path(model).unlink()
    decision = reuse_decision(model, df[df["split"] == "train"], df, settings, "never")
    assert not decision.keep and why in decision.reason


def test_bad_mode_and_missing_digests_are_clear_errors(saved):
    model, df = saved
    with pytest.raises(ConfigError, match="retrain must be"):
        decide(model, df, retrain="sometimes")
    with pytest.raises(ConfigError, match="sha256"):
        reuse_decision(model, df.drop(columns="sha256"), df, SETTINGS)


def test_a_kept_model_is_published_as_byte_copies(saved, tmp_path):
    model, _ = saved
    copies = publish_kept(model, tmp_path / "run" / "models" / "m.keras")
    assert [p.read_bytes() for p in copies] == [
        p.read_bytes() for p in (model, labels_path(model), record_path(model))]
    assert publish_kept(model, model)[0] == model  # the same file: nothing to copy


def test_code_digest_follows_the_bytes_of_the_modules_and_packages(tmp_path, monkeypatch):
    import importlib
    import sys

    from lfhelpers.store import code_digest

    pkg = tmp_path / "somepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "a.py").write_text("X = 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    package, module = importlib.import_module("somepkg"), importlib.import_module("somepkg.a")
    try:
        before = code_digest(package), code_digest(module)
        assert before == (code_digest(package), code_digest(module))  # stable
        (pkg / "b.py").write_text("Y = 2\n", encoding="utf-8")  # a new file in the package
        assert code_digest(package) != before[0] and code_digest(module) == before[1]
        (pkg / "a.py").write_text("X = 2\n", encoding="utf-8")
        assert code_digest(module) != before[1]
    finally:
        for name in ("somepkg", "somepkg.a"):
            sys.modules.pop(name, None)
