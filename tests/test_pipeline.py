"""The pipeline runner and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lfhelpers.cli import main
from lfhelpers.errors import ConfigError, PipelineError
from lfhelpers.metrics import read_metrics, record_metrics
from lfhelpers.pipeline import (
    discover_notebooks,
    notebook_parameters,
    parse_overrides,
    parse_value,
    run_pipeline,
    select_notebooks,
)

ROOT = Path(__file__).resolve().parent.parent


def write_nb(path: Path, params: str, body: str) -> None:
    nb = new_notebook(cells=[new_markdown_cell("# test"),
                             new_code_cell(params, metadata={"tags": ["parameters"]}),
                             new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def toy(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_nb(nbdir / "01_first.ipynb", 'out_dir = ""\nseed = 0\nalpha = 1.0',
             "from lfhelpers.metrics import record_metrics\n"
             "record_metrics(out_dir, '01_first', {'alpha': alpha, 'seed': seed})")
    write_nb(nbdir / "02_second.ipynb", 'out_dir = ""\nseed = 0\nflag = False',
             "import sys\nfrom lfhelpers.metrics import record_metrics\n"
             "record_metrics(out_dir, '02_second', {'flag': flag, 'python': sys.executable})")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("t:\n  all:\n    seed: 5\n  01_first:\n    alpha: 2.5\n")
    return nbdir, profiles


def test_parse_values():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("data/x") == "data/x"
    assert parse_overrides(["a=1", "b=x=y"]) == {"a": 1, "b": "x=y"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])


def test_parameters_merge_profile_overrides_and_filter():
    params = notebook_parameters(
        "03_x", ["data_dir", "out_dir", "seed", "epochs"],
        {"all": {"seed": 1, "data_dir": "{out}/d", "other": 3}, "03_x": {"epochs": 2}},
        {"epochs": 9, "unknown": 1}, "/r")
    assert params == {"seed": 1, "data_dir": "/r/d", "epochs": 9, "out_dir": "/r"}


def test_select_by_number_and_unknown_is_an_error(toy):
    nbdir, _ = toy
    nbs = discover_notebooks(nbdir)
    assert [p.stem for p in select_notebooks(nbs, "2")] == ["02_second"]
    with pytest.raises(ConfigError, match="07"):
        select_notebooks(nbs, "01,07")


def test_run_executes_in_order_merges_metrics_and_exports_html(toy, tmp_path):
    nbdir, profiles = toy
    out = tmp_path / "run"
    result = run_pipeline("t", overrides={"flag": True}, out_dir=out, notebook_dir=nbdir,
                          profiles_file=profiles, echo=False)
    assert [r.status for r in result.notebooks] == ["ok", "ok"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["01_first"] == {"alpha": 2.5, "seed": 5}
    assert metrics["02_second"]["flag"] is True
    # notebooks run with the Python of the current environment
    assert Path(metrics["02_second"]["python"]).resolve() == Path(sys.executable).resolve()
    for stem in ("01_first", "02_second"):
        assert (out / f"{stem}.ipynb").is_file() and (out / f"{stem}.html").is_file()


def test_failure_names_notebook_and_cell_and_keeps_partial_outputs(toy, tmp_path):
    nbdir, profiles = toy
    write_nb(nbdir / "01_first.ipynb", 'out_dir = ""\nseed = 0',
             "raise ValueError('broken input')")
    out = tmp_path / "run"
    with pytest.raises(PipelineError, match=r"01_first failed at cell \d+.*broken input"):
        run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles, echo=False)
    assert (out / "01_first.ipynb").is_file() and (out / "01_first.html").is_file()
    assert not (out / "02_second.ipynb").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["notebooks"][0]["status"] == "failed"


def test_metrics_merge_keeps_other_notebooks(tmp_path):
    record_metrics(tmp_path, "01_a", {"x": 1})
    record_metrics(tmp_path, "02_b", {"y": 2.0})
    record_metrics(tmp_path, "01_a", {"z": {"k": 3}})
    assert read_metrics(tmp_path) == {"01_a": {"x": 1, "z": {"k": 3}}, "02_b": {"y": 2.0}}


def test_cli_reports_bad_profile_clearly(capsys):
    assert main(["run", "--profile", "nope", "--out", "/nonexistent-dir/x"]) == 2
    assert "Unknown profile 'nope'" in capsys.readouterr().err


def test_cli_clean(tmp_path, synthetic_raw, capsys):
    assert main(["clean", str(synthetic_raw), "--out", str(tmp_path / "c"),
                 "--min-per-class", "5"]) == 0
    out = capsys.readouterr().out
    assert "rejected truncated: 1" in out and "열쇠고리" in out
    assert (tmp_path / "c" / "manifest.csv").is_file()


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(tmp_path):
    """``python -m lfhelpers run --profile smoke`` executes every notebook present."""
    out = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "-m", "lfhelpers", "run", "--profile", "smoke",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stems = [p.stem for p in discover_notebooks(ROOT / "notebooks")]
    metrics = json.loads((out / "metrics.json").read_text())
    for stem in stems:
        assert (out / f"{stem}.ipynb").is_file(), stem
        assert (out / f"{stem}.html").is_file(), stem
        assert stem in metrics, stem


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from lfhelpers.fsutil import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_progress_bars_collapse_to_their_last_state():
    from lfhelpers.pipeline import collapse_progress

    assert collapse_progress("a:  0%\ra: 50%\ra:100%\ndone\n") == "a:100%\ndone\n"
