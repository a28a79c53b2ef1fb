"""Tests of lfhelpers.color: color data, the color-name models, dominant colors, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lfhelpers import color
from lfhelpers.cli import main as cli_main
from lfhelpers.data import spread_sample
from lfhelpers.errors import ConfigError, DataError

GOOD = {"r": 200, "g": 20, "b": 30, "label": "red-ish", "uid": "u1"}


@pytest.fixture(scope="module")
def synthetic_data() -> color.ColorData:
    return color.load_color_data("synthetic", seed=0)


@pytest.fixture(scope="module")
def namer(synthetic_data: color.ColorData):
    """The better model fitted on the synthetic color fixture (seconds, offline)."""
    return color.fit_color_namer(synthetic_data, seed=0)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, namer) -> Path:
    path = tmp_path_factory.mktemp("models") / "color_names.joblib"
    return color.save_color_namer(namer, path, source="synthetic")


# --------------------------------------------------------------------------- color data


def test_validation_counts_bad_entries_and_keeps_the_rest():
    entries = [
        GOOD,
        {**GOOD, "label": " Blue-ish "},  # case and spaces ignored
        {**GOOD, "r": 256},
        {**GOOD, "g": -1},
        {**GOOD, "b": 12.5},
        {**GOOD, "r": "12"},
        {**GOOD, "r": True},
        {**GOOD, "label": "sky-ish"},
        {k: v for k, v in GOOD.items() if k != "uid"},
        {**GOOD, "b": None},
        {**GOOD, "uid": "  "},
        "not an entry",
        {**GOOD, "g": 40.0},  # an integral float is accepted
    ]
    data = color.validate_color_entries({"entries": entries}, source="test")
    assert len(data.frame) == 3
    assert data.n_entries == len(entries)
    assert data.problems == {
        "r/g/b out of range 0-255": 2,
        "r/g/b not an integer": 3,
        "unknown label": 1,
        "missing uid": 1,
        "missing b": 1,
        "empty uid": 1,
        "not an object": 1,
    }
    assert data.n_bad == 10
    assert list(data.frame["label"]) == ["red-ish", "blue-ish", "red-ish"]
    assert data.X.shape == (3, 3) and data.X.dtype == np.float32
    summary = data.summary()["value"]
    assert summary["valid entries"] == 3 and summary["skipped entries"] == 10


def test_validation_rejects_unusable_structures():
    with pytest.raises(DataError, match="entries"):
        color.validate_color_entries({"colors": []})
    with pytest.raises(DataError, match="list"):
        color.validate_color_entries({"entries": "nope"})
    with pytest.raises(DataError, match="no valid color entry"):
        color.validate_color_entries([{"r": 1}])


def test_read_color_file_errors_say_what_is_wrong(tmp_path):
    bad = tmp_path / "colorData.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="not a JSON"):
        color.read_color_file(bad)
    with pytest.raises(DataError, match="No color data"):
        color.read_color_file(tmp_path / "missing.json")


def test_synthetic_fixture(synthetic_data):
    assert len(synthetic_data.frame) == 1500
    assert synthetic_data.n_bad == 6
    assert synthetic_data.frame["uid"].nunique() == 40
    assert set(synthetic_data.frame["label"]) == set(color.TUTORIAL_LABELS)


def test_load_color_data_reads_a_file_and_fetches_a_name(tmp_path, monkeypatch):
    folder = tmp_path / "codingtrain_colors"
    folder.mkdir()
    (folder / "colorData.json").write_text(json.dumps({"entries": [GOOD, {**GOOD, "r": 999}]}))
    assert len(color.load_color_data(folder / "colorData.json").frame) == 1

    calls = []

    def fake_fetch(name, dest=None, **kwargs):
        calls.append((name, dest))
        return folder

    monkeypatch.setattr("lfhelpers.data.sources.fetch", fake_fetch)
    data = color.load_color_data("codingtrain_colors", dest=tmp_path / "dest")
    assert calls == [("codingtrain_colors", tmp_path / "dest")]
    assert data.n_entries == 2 and data.n_bad == 1


# --------------------------------------------------------------------------- models


def test_tutorial_model_matches_the_tutorial():
    model = color.build_tutorial_model()
    assert model.count_params() == 841
    hidden, out = model.layers
    assert (hidden.units, hidden.activation.__name__) == (64, "relu")
    assert (out.units, out.activation.__name__) == (9, "softmax")
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    defaults = color.TutorialColorClassifier()
    assert (defaults.epochs, defaults.batch_size, defaults.learning_rate) == (15, 32, 0.001)


def test_tutorial_classifier_is_deterministic_under_its_seed(synthetic_data):
    X, y = synthetic_data.X[:400], synthetic_data.y[:400]
    a = color.TutorialColorClassifier(epochs=2, seed=3).fit(X, y)
    b = color.TutorialColorClassifier(epochs=2, seed=3).fit(X, y)
    assert a.count_params() == 841
    assert list(a.classes_) == list(color.TUTORIAL_LABELS)
    np.testing.assert_allclose(a.predict_proba(X[:50]), b.predict_proba(X[:50]), atol=1e-6)
    assert set(a.predict(X[:50])) <= set(color.TUTORIAL_LABELS)


def test_split_by_contributor_keeps_people_apart(synthetic_data):
    groups = synthetic_data.groups
    folds = color.cv_splits(synthetic_data, "by_user", n_splits=5, seed=1)
    assert len(folds) == 5
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(groups)))
    with pytest.raises(ConfigError):
        color.cv_splits(synthetic_data, "by_color")


def test_evaluation_is_kept_and_not_refitted_for_the_same_data(synthetic_data, tmp_path,
                                                                 monkeypatch):
    """Notebook 04 rerun for new item photos reads its cross-validation instead of refitting."""
    from lfhelpers.color import evaluation as ev_module

    # in this process (n_jobs=1), where the patched fit_quietly below is the one called
    first = color.evaluate_models(synthetic_data, ["knn_lab"], n_splits=3, seed=0,
                                  progress=False, cache_dir=tmp_path, n_jobs=1)

    def refit(*args, **kwargs):
        raise AssertionError("the models were fitted again")

    monkeypatch.setattr(ev_module, "fit_quietly", refit)
    again = color.evaluate_models(synthetic_data, ["knn_lab"], n_splits=3, seed=0,
                                  progress=False, cache_dir=tmp_path, n_jobs=2)
    pd.testing.assert_frame_equal(first.scores, again.scores)  # n_jobs is not in the key
    with pytest.raises(AssertionError, match="fitted again"):  # other settings: a new result
        color.evaluate_models(synthetic_data, ["knn_lab"], n_splits=3, seed=1, progress=False,
                              cache_dir=tmp_path, n_jobs=1)


def test_evaluation_in_processes_equals_the_serial_one(synthetic_data):
    """The fits run in worker processes, slowest first, and are put back in order: the same
    scores, predictions and parameter counts as one after the other (the tutorial's Keras
    fits included, in workers started by the Keras initializer)."""
    settings = dict(models=["svc_lab", "tutorial", "knn_lab"], n_splits=3, seed=0, epochs=2,
                    progress=False)
    serial = color.evaluate_models(synthetic_data, **settings, n_jobs=1)
    parallel = color.evaluate_models(synthetic_data, **settings, n_jobs=2)
    pd.testing.assert_frame_equal(serial.scores, parallel.scores)
    assert list(serial.scores["model"].unique()) == settings["models"]
    assert serial.predictions.keys() == parallel.predictions.keys()
    for key, pred in serial.predictions.items():
        np.testing.assert_array_equal(pred, parallel.predictions[key])
    assert serial.params == parallel.params == {"svc_lab": None, "tutorial": 841,
                                                "knn_lab": None}


def test_tutorial_classifier_one_epoch_per_call_trains_the_same_weights(synthetic_data):
    """TutorialColorClassifier compiles with one epoch per call of the training step; the
    batches and so the weights and the history are those of one batch per call."""
    X, y = synthetic_data.X[:300], synthetic_data.y[:300]
    fitted = color.TutorialColorClassifier(epochs=2, batch_size=32, seed=5).fit(X, y)
    assert fitted.model_.steps_per_execution == 10  # ceil(300 / 32)

    keras = color.models.import_keras()
    targets = keras.utils.to_categorical(
        [list(fitted.classes_).index(v) for v in y], len(fitted.classes_))
    keras.utils.set_random_seed(5)
    one = color.build_tutorial_model(len(fitted.classes_))  # one batch per call
    history = one.fit(np.asarray(X, np.float32) / 255.0, targets, batch_size=32, epochs=2,
                      shuffle=True, verbose=0)
    for a, b in zip(fitted.model_.get_weights(), one.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fitted.history_["loss"] == [float(v) for v in history.history["loss"]]


def test_decision_regions_rule_row_is_name_colors(synthetic_data, namer):
    """The figure's white/black/grey row reuses the model's own row: it must still be what
    name_colors says for every color of the plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lfhelpers.color.naming import COLOR_NAMES
    from lfhelpers.color.spaces import hls_grid

    fig = color.plot_decision_regions({"ensemble_lab": namer}, saturations=(1.0, 0.3),
                                      n_hues=37, n_lightness=21, neutral_model="ensemble_lab")
    shown = [np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes]  # row by row
    for j, sat in enumerate((1.0, 0.3)):
        flat = hls_grid(np.linspace(0, 360, 37), np.linspace(0, 1, 21), sat).reshape(-1, 3)
        plain = [COLOR_NAMES.index(n) for n in namer.predict(flat)]
        np.testing.assert_array_equal(shown[2 + j].ravel(), plain)
        expected = [COLOR_NAMES.index(n) for n in color.name_colors(flat, namer)]
        np.testing.assert_array_equal(shown[4 + j].ravel(), expected)
        assert expected != plain  # the rule changed some colors: the row is not a copy
    plt.close(fig)


def test_evaluate_models_table_and_confusion(synthetic_data):
    ev = color.evaluate_models(synthetic_data, ["svc_lab", "knn_lab"], n_splits=3, seed=0,
                               progress=False)
    table = ev.table()
    assert list(table.index) == ["svc_lab", "knn_lab", "tutorial (published)"]
    assert table.loc["tutorial (published)", "accuracy, random split"] == 0.7735
    assert 0.6 < ev.accuracy("svc_lab") <= 1 and 0.6 < ev.accuracy("svc_lab", "by_user") <= 1
    confusion = ev.confusion("svc_lab", "by_user")
    assert list(confusion.index) == list(color.TUTORIAL_LABELS)
    assert confusion.to_numpy().sum() == len(synthetic_data.frame)
    assert ev.best_model() in {"svc_lab", "knn_lab"}
    with pytest.raises(ConfigError):
        color.make_model("bigger")


def test_saved_model_round_trip(saved_model, namer):
    loaded = color.load_color_namer(saved_model, color_source="synthetic")
    rgb = np.array([[200, 30, 30], [30, 60, 200]])
    assert list(loaded.predict(rgb)) == list(namer.predict(rgb))
    assert color.read_color_namer(saved_model)[1] == "synthetic"


def test_a_fixture_model_is_refused_when_real_color_data_is_wanted(saved_model):
    with pytest.raises(ConfigError, match="synthetic fixture") as info:
        color.load_color_namer(saved_model, color_source="codingtrain_colors")
    assert "Retrain" in str(info.value) and "--color-source synthetic" in str(info.value)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project folder as the working folder: its models/ is the default model path."""
    monkeypatch.setenv("LF_PROJECT_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_fixture_model_never_lands_on_the_default_path(project, namer, capsys):
    default = project / color.DEFAULT_MODEL_PATH
    assert color.is_default_model_path(default)
    assert color.is_default_model_path(color.DEFAULT_MODEL_PATH)
    assert not color.is_default_model_path(project / "out" / color.DEFAULT_MODEL_PATH)
    with pytest.raises(ConfigError, match="look for the real model there"):
        color.save_color_namer(namer, color.DEFAULT_MODEL_PATH, source="synthetic")
    assert not default.exists()
    # the command trains on the fixture when asked, but does not save it where the real one is
    image = _save(Image.new("RGB", (20, 20), (20, 40, 200)), project / "blue.png")
    assert cli_main(["color", str(image), "--color-source", "synthetic"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}\tblue-ish 100%")
    assert not default.exists()
    # a real model is saved there and used
    color.save_color_namer(namer, color.DEFAULT_MODEL_PATH, source="codingtrain_colors")
    assert default.is_file() and color.load_color_namer() is not None


def test_the_command_refuses_a_fixture_model_left_on_the_default_path(project, namer, capsys):
    """Issue #13: a model an older version trained on the fixture and saved to the default path
    used to be used silently by `color IMAGE`; now the command stops and says how to retrain."""
    import joblib

    default = project / color.DEFAULT_MODEL_PATH
    default.parent.mkdir()
    joblib.dump({"model": namer, "source": "synthetic fixture", "format": 1}, default)
    image = _save(Image.new("RGB", (20, 20), (20, 40, 200)), project / "blue.png")
    assert cli_main(["color", str(image)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trained on the synthetic fixture" in captured.err
    assert "python -m lfhelpers run --profile cpu --only 04" in captured.err
    assert cli_main(["color", str(image), "--color-source", "synthetic"]) == 0


# --------------------------------------------------------------------------- naming


def test_white_black_grey_come_from_lightness_and_chroma():
    rgb = np.array([[255, 255, 255], [246, 246, 240], [0, 0, 0], [25, 25, 28], [128, 128, 128],
                    [0, 0, 128], [200, 30, 30]])
    assert list(color.neutral_names(color.rgb_to_lab(rgb))) == [
        "white", "white", "black", "black", "grey", "", ""]
    assert color.name_colors([[255, 255, 255], [0, 0, 0]], None) == ["white", "black"]
    with pytest.raises(ConfigError):
        color.name_colors([[200, 30, 30]], None)


# --------------------------------------------------------------------------- photos


@pytest.mark.parametrize("index", range(len(color.make_known_color_photos())))
def test_main_color_of_photos_known_by_construction(index, namer):
    description, image, expected = color.make_known_color_photos()[index]
    palette = color.dominant_colors(image, namer)
    assert palette.main.name == expected, (description, palette.describe())
    assert sum(c.share for c in palette.colors) == pytest.approx(1.0)
    assert [c.share for c in palette.colors] == sorted((c.share for c in palette.colors),
                                                       reverse=True)


def test_white_pixels_are_not_thrown_away(namer):
    white = np.full((60, 60, 3), 255, np.uint8)
    assert color.dominant_colors(white, namer).describe() == "white 100%"
    # a white item on a black background keeps its white pixels
    img = np.zeros((80, 80, 3), np.uint8)
    img[10:70, 10:70] = 250
    palette = color.dominant_colors(img, namer)
    assert palette.main.name == "white" and palette.main.share > 0.9
    # a white screen inside a black phone on a white table stays part of the item
    img = np.full((100, 100, 3), 245, np.uint8)
    img[15:85, 30:70] = 20
    img[25:75, 35:65] = 250
    names = {c.name: c.share for c in color.dominant_colors(img, namer).colors}
    assert set(names) == {"black", "white"} and names["white"] > 0.4


def test_palettes_that_should_not_be_trusted_are_flagged(namer):
    small = np.full((100, 100, 3), 235, np.uint8)
    small[40:65, 40:65] = (20, 20, 24)  # a black item covering 6% of the photo
    blue = np.full((100, 100, 3), 235, np.uint8)
    blue[20:80, 20:80] = (30, 70, 190)
    palettes = [color.dominant_colors(small, namer), color.dominant_colors(blue, namer)]
    assert palettes[0].mask_share == pytest.approx(0.0625, abs=0.01)
    assert palettes[0].warnings() == ["item mask covers only 6% of the photo"]
    assert palettes[1].warnings() == []
    table = color.palette_table(["a", "b"], ["small.png", "blue.png"], palettes)
    assert list(table["mask share"]) == [0.06, 0.36]
    assert table["warning"].tolist() == ["item mask covers only 6% of the photo", ""]
    # a red cup on a black advert: the black may be the advert's
    image, mask = np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), bool)
    advert = color.Palette([color.ColorShare("black", 0.6, (10, 10, 10)),
                            color.ColorShare("red-ish", 0.4, (200, 20, 20))],
                           mask_share=0.5, method="center", image=image, mask=mask)
    assert advert.warnings() == [
        "background not told apart: the centre of the photo was named",
        "red-ish 40% beside a black main color: either may be the item's"]


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_image_modes_and_sizes_work(tmp_path, namer):
    red = (210, 30, 30)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 2] = 255  # the color under transparent pixels must not count
    rgba[10:30, 10:30] = (*red, 255)
    la = Image.new("LA", (40, 40), (0, 0))
    la.paste(Image.new("LA", (20, 20), (250, 255)), (10, 10))
    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([0, 255, 0] + list(red) + [0] * 762)
    pal.paste(1, (10, 10, 30, 30))
    pal.info["transparency"] = 0
    grey16 = Image.fromarray(np.full((30, 30), 60000, np.uint16))
    cases = {
        "rgba.png": (_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"), "red-ish"),
        "la.png": (_save(la, tmp_path / "la.png"), "white"),
        "palette.png": (_save(pal, tmp_path / "palette.png"), "red-ish"),
        "grey16.png": (_save(grey16, tmp_path / "grey16.png"), "white"),
        "one_pixel.png": (_save(Image.new("RGB", (1, 1), red), tmp_path / "one_pixel.png"),
                          "red-ish"),
        "two_by_three.png": (_save(Image.new("L", (2, 3), 10), tmp_path / "two_by_three.png"),
                             "black"),
        "cmyk.jpg": (_save(Image.new("RGB", (30, 30), red).convert("CMYK"),
                           tmp_path / "cmyk.jpg"), "red-ish"),
    }
    for name, (path, expected) in cases.items():
        palette = color.dominant_colors(path, namer)
        assert palette.main.name == expected, (name, palette.describe())
    fully_transparent = np.zeros((10, 10, 4), np.uint8)
    assert color.dominant_colors(fully_transparent, namer).main.name == "black"


def test_unreadable_image_raises_data_error(tmp_path, namer):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>404</html>")
    with pytest.raises(DataError, match="bad.jpg"):
        color.dominant_colors(bad, namer)
    with pytest.raises(DataError, match="no such file"):
        color.dominant_colors(tmp_path / "missing.png", namer)
    assert color.extract_palettes([bad], namer, progress=False) == [None]


def test_kept_palettes_equal_fresh_ones_and_are_named_by_the_model_given(tmp_path, namer,
                                                                          monkeypatch):
    """Notebooks 06 and 07 cluster a photo's colors once; the names still follow the model."""
    from PIL import Image

    from lfhelpers.color import photos

    files = []
    for i, rgb in enumerate([(200, 30, 30), (30, 30, 200), (240, 240, 240)]):
        img = np.full((60, 60, 3), 250, np.uint8)
        img[15:45, 15:45] = rgb
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
        files.append(tmp_path / f"p{i}.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    fresh = [color.dominant_colors(f, namer) for f in files]
    first = color.extract_palettes(files + [bad], namer, progress=False, cache_dir=tmp_path / "c")
    assert first[-1] is None
    monkeypatch.setattr(photos, "item_clusters", lambda *a, **k: pytest.fail("recomputed"))
    kept = color.extract_palettes(files, namer, progress=False, cache_dir=tmp_path / "c")
    assert [p.describe() for p in kept] == [p.describe() for p in fresh]
    assert [p.colors[0].rgb for p in kept] == [p.colors[0].rgb for p in fresh]

    class Everything:  # another model: every chromatic color is called green-ish
        def predict(self, rgb):
            return np.array(["green-ish"] * len(rgb))

    renamed = color.extract_palettes(files, Everything(), progress=False,
                                     cache_dir=tmp_path / "c")
    assert renamed[0].main.name == "green-ish" and renamed[2].main.name == "white"


def test_sample_gallery_spreads_over_classes():
    import pandas as pd

    manifest = pd.DataFrame({"label": ["a"] * 10 + ["b"] * 3 + ["c"] * 10,
                             "file": [f"f{i}.jpg" for i in range(23)]})
    picked = spread_sample(manifest, 9, seed=1)
    assert picked["label"].value_counts().to_dict() == {"a": 3, "b": 3, "c": 3}
    assert picked.equals(spread_sample(manifest, 9, seed=1))


# --------------------------------------------------------------------------- command line


def test_cli_prints_one_line_per_image_and_goes_on_after_a_bad_one(tmp_path, saved_model,
                                                                   capsys):
    photos = {d: img for d, img, _ in color.make_known_color_photos()}
    white = _save(photos["white phone on a grey table"], tmp_path / "white phone.png")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    red = _save(photos["red mug on a grey table"], tmp_path / "red.jpg")
    fixture = ["--model", str(saved_model), "--color-source", "synthetic"]
    code = cli_main(["color", str(white), str(bad), str(red), *fixture])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(lines) == 3
    assert lines[0].startswith(f"{white}\twhite ")
    assert lines[1].startswith(f"{bad}\terror: ")
    assert lines[2].startswith(f"{red}\tred-ish ")

    assert cli_main(["color", str(red), "--json", *fixture]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(red) and record["colors"][0]["name"] == "red-ish"
    assert record["colors"][0]["hex"].startswith("#")


def test_cli_trains_and_saves_a_model_when_missing(tmp_path, capsys):
    model = tmp_path / "models" / "names.joblib"
    image = _save(Image.new("RGB", (20, 20), (20, 40, 200)), tmp_path / "blue.png")
    code = cli_main(["color", str(image), "--model", str(model), "--color-source", "synthetic"])
    assert code == 0 and model.is_file()
    assert capsys.readouterr().out.startswith(f"{image}\tblue-ish 100%")


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
@pytest.mark.realdata
def test_accuracy_targets_on_the_real_color_data(mirror, tmp_path):
    data = color.load_color_data("codingtrain_colors", dest=tmp_path / "colors", progress=False)
    assert (len(data.frame), data.n_bad, data.frame["uid"].nunique()) == (5643, 0, 167)
    ev = color.evaluate_models(data, ["tutorial", color.BEST_MODEL], n_splits=5, seed=42,
                               schemes=("random",), progress=False)
    assert 0.75 <= ev.accuracy("tutorial") <= 0.79
    assert ev.accuracy(color.BEST_MODEL) >= 0.80
