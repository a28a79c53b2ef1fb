"""The pipeline runner and the command line."""

from __future__ import annotations

import json
import os
import re
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
def test_smoke_profile_runs_every_notebook(smoke_run):
    """``python -m lfhelpers run --profile smoke`` executes every notebook present.

    Uses the session's one smoke run (``smoke_run`` in conftest.py), shared with the explorer
    and browser tests.
    """
    out = smoke_run
    stems = [p.stem for p in discover_notebooks(ROOT / "notebooks")]
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    assert {r["stem"]: r["status"] for r in run["notebooks"]} == dict.fromkeys(stems, "ok")
    for stem in stems:
        assert (out / f"{stem}.ipynb").is_file(), stem
        assert (out / f"{stem}.html").is_file(), stem
        assert stem in metrics, stem
    noise = ("cuInit", "absl::InitializeLog", "E0000", "findfont", "NodeDef mentions")
    for stem in stems:
        for suffix in (".ipynb", ".html"):
            text = (out / f"{stem}{suffix}").read_text(encoding="utf-8")
            assert not [n for n in noise if n in text], f"{stem}{suffix} has log noise"


@pytest.mark.slow
def test_a_rerun_of_03_on_unchanged_data_keeps_the_saved_model(smoke_run, tmp_path):
    """Notebook 03 run again on the same training photos scores the model it saved, unchanged."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    model = run / "models" / "xception_smoke.keras"
    before = model.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "lfhelpers", "run", "--profile", "smoke",
                           "--out", str(run), "--only", "03", "--force", "03", "--no-html"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    first = json.loads((smoke_run / "metrics.json").read_text())["03_xception_finetune"]
    again = json.loads((run / "metrics.json").read_text())["03_xception_finetune"]
    assert again["kept_model"] is True and first["kept_model"] is False
    assert again["train_seconds"] == 0 and model.read_bytes() == before
    assert (again["test_top1"], again["n_test"]) == (first["test_top1"], first["n_test"])
    assert abs(again["test_top3"] - first["test_top3"]) < 1e-9


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


# --------------------------------------------------------------------------- graph and cache

CHAIN_GRAPH = """\
01_make:
  writes: ["{data_dir}"]
02_mid:
  reads: ["{data_dir}"]
  writes: ["{res_file}"]
03_end:
  reads: ["{res_file}"]
04_side:
  reads: ["{data_dir}", "{no_such_parameter}/x"]
"""

TIMES = ("import os\nimport time\nfrom pathlib import Path\n"
         "from lfhelpers.metrics import record_metrics\nstart = time.time()\ntime.sleep(nap)\n")


@pytest.fixture()
def chain(tmp_path):
    """01 writes data, 02 turns it into res.txt, 03 reads that; 04 reads data only."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    common = 'out_dir = ""\nseed = 0\nnap = 0.0\ndata_dir = ""\n'
    write_nb(nbdir / "01_make.ipynb", common + "alpha = 1.0",
             TIMES + "Path(data_dir).mkdir(parents=True, exist_ok=True)\n"
             "(Path(data_dir) / 'a.txt').write_text(str(alpha))\n"
             "record_metrics(out_dir, '01_make', {'alpha': alpha})")
    write_nb(nbdir / "02_mid.ipynb", common + 'beta = 1\nres_file = ""',
             TIMES + "text = (Path(data_dir) / 'a.txt').read_text()\n"
             "Path(res_file).write_text(f'{text}*{beta}')\n"
             "record_metrics(out_dir, '02_mid', {'start': start, 'end': time.time(), "
             "'nested': {'per_class': {'bag': 0.5, 'key': 0.25}}, 'nice': os.nice(0)})")
    write_nb(nbdir / "03_end.ipynb", common + 'res_file = ""',
             TIMES + "record_metrics(out_dir, '03_end', {'res': Path(res_file).read_text()})")
    write_nb(nbdir / "04_side.ipynb", common,
             TIMES + "group = Path('/proc/self/autogroup')\n"
             "record_metrics(out_dir, '04_side', {'start': start, 'end': time.time(), "
             "'nice': os.nice(0), 'group': group.read_text() if group.exists() else ''})")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text('t:\n  all:\n    data_dir: "{out}/data"\n    res_file: "{out}/res.txt"\n')
    (tmp_path / "graph.yaml").write_text(CHAIN_GRAPH)
    return nbdir, profiles


def _run(chain, out, **kwargs):
    nbdir, profiles = chain
    kwargs.setdefault("echo", False)
    result = run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                          html=False, **kwargs)
    return {r.stem: r.status for r in result.notebooks}


def test_graph_gives_order_dependencies_and_tolerates_unknowns(chain):
    from lfhelpers.pipeline.graph import build_graph, load_graph

    nbdir, profiles = chain
    spec = load_graph(profiles.with_name("graph.yaml"))
    values = {"01_make": {"data_dir": "o/data"}, "02_mid": {"data_dir": "o/data",
                                                            "res_file": "o/res.txt"},
              "03_end": {"res_file": "o/res.txt"}, "04_side": {"data_dir": "o/data"},
              "05_new": {"whatever": 1}}
    nodes = build_graph(list(values), values, spec, Path("/w"))
    assert nodes["02_mid"].deps == {"01_make"} and nodes["03_end"].deps == {"02_mid"}
    # a template naming a parameter the notebook lacks names no path
    assert nodes["04_side"].deps == {"01_make"} and nodes["04_side"].reads == [Path("/w/o/data")]
    # a notebook without an entry waits for every notebook before it
    assert nodes["05_new"].deps == {"01_make", "02_mid", "03_end", "04_side"}


def test_code_fingerprint_follows_lfhelpers_imports(chain):
    from lfhelpers.pipeline.cache import code_files
    from lfhelpers.pipeline.config import PACKAGE_DIR

    names = {p.name for p in code_files(chain[0] / "02_mid.ipynb", PACKAGE_DIR)}
    assert {"__init__.py", "metrics.py", "fsutil.py"} <= names
    assert "classifier.py" not in names and "runner.py" not in names


def test_cached_reruns_rerun_only_what_changed(chain, tmp_path, capsys):
    nbdir, _ = chain
    out = tmp_path / "run"
    assert set(_run(chain, out, echo=True).values()) == {"ok"}
    printed = capsys.readouterr().out
    # not a terminal: a progress line per executed cell, and a log file per notebook
    assert re.search(r"^02_mid: cell 3/3, [\d.]+ s$", printed, re.M), printed
    assert "03_end: cell" in (out / "logs" / "03_end.log").read_text()
    assert "02_mid" not in (out / "logs" / "03_end.log").read_text()

    assert set(_run(chain, out).values()) == {"cached"}
    run_json = json.loads((out / "run.json").read_text())
    assert {n["status"] for n in run_json["notebooks"]} == {"cached"}

    # a parameter of the second notebook: it and its dependant rerun, nothing else
    assert _run(chain, out, overrides={"beta": 2}) == {
        "01_make": "cached", "02_mid": "ok", "03_end": "ok", "04_side": "cached"}
    assert read_metrics(out)["03_end"]["res"] == "1.0*2"

    # an edited notebook source reruns that notebook
    write_nb(nbdir / "03_end.ipynb", 'out_dir = ""\nseed = 0\nnap = 0.0\nres_file = ""',
             "from pathlib import Path\nfrom lfhelpers.metrics import record_metrics\n"
             "record_metrics(out_dir, '03_end', {'res': 'edited ' + Path(res_file).read_text()})")
    assert _run(chain, out, overrides={"beta": 2}) == {
        "01_make": "cached", "02_mid": "cached", "03_end": "ok", "04_side": "cached"}

    # a deleted output reruns its producer (and so what reads it)
    (out / "res.txt").unlink()
    assert _run(chain, out, overrides={"beta": 2}) == {
        "01_make": "cached", "02_mid": "ok", "03_end": "ok", "04_side": "cached"}
    assert read_metrics(out)["03_end"]["res"] == "edited 1.0*2"


def test_a_declared_output_the_run_had_no_cause_to_make_does_not_rerun_it(chain, tmp_path):
    """01 given a local folder as its source makes no raw_dir copy: a rerun stays cached."""
    nbdir, profiles = chain
    graph = profiles.with_name("graph.yaml")
    graph.write_text(CHAIN_GRAPH.replace('04_side:\n', '04_side:\n  writes: ["{data_dir}_copy"]\n'))
    out = tmp_path / "run"
    assert set(_run(chain, out).values()) == {"ok"}
    assert not (out / "data_copy").exists()
    assert set(_run(chain, out).values()) == {"cached"}


def test_force_all_or_listed_and_dry_run_says_why(chain, tmp_path):
    from lfhelpers.pipeline import format_plan

    out = tmp_path / "run"
    _run(chain, out)
    assert _run(chain, out, force="02") == {
        "01_make": "cached", "02_mid": "ok", "03_end": "ok", "04_side": "cached"}
    assert set(_run(chain, out, force=True).values()) == {"ok"}

    before = (out / "02_mid.ipynb").stat().st_mtime_ns
    nbdir, profiles = chain
    result = run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                          overrides={"beta": 3}, dry_run=True, echo=False)
    plan = format_plan(result)
    assert "01_make: cached" in plan and "04_side: cached" in plan
    assert "02_mid: runs (parameter beta changed)" in plan
    assert "03_end: runs (upstream 02_mid reruns)" in plan
    assert (out / "02_mid.ipynb").stat().st_mtime_ns == before  # nothing ran


def test_jobs_run_independent_notebooks_side_by_side(chain, tmp_path, capsys, monkeypatch):
    from lfhelpers.pipeline import execute, format_summary

    monkeypatch.setattr(execute, "HEARTBEAT_SECONDS", 0.5)  # a line while a long cell runs
    nbdir, profiles = chain
    out = tmp_path / "run"
    result = run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                          overrides={"nap": 2.0}, jobs=2, html=False, echo=True, only="01,02,04")
    assert [r.status for r in result.notebooks] == ["ok", "ok", "ok"]
    m = read_metrics(out)
    # 02 and 04 both wait only for 01: their cells overlap in time
    assert m["02_mid"]["start"] < m["04_side"]["end"] and m["04_side"]["start"] < m["02_mid"]["end"]
    printed = capsys.readouterr().out
    assert "04_side: cell 3/3" in printed and "02_mid: cell 3/3" in printed
    assert re.search(r"^02_mid: cell 3/3 running, [\d.]+ s$", printed, re.M), printed
    summary = format_summary(result)
    assert re.search(r"02_mid\s+ok\s+[\d.]+ s", summary) and "Total:" in summary
    assert "nested={per_class: {bag: 0.5, key: 0.25}}" in summary


def test_side_by_side_what_the_run_does_not_wait_for_runs_at_a_lower_priority(chain, tmp_path):
    """02 has 03 after it, 04 nothing: 04 runs beside 02 in the background kernel, whose CPU
    priority (its nice value, and that of its session's scheduling group) is lower."""
    from lfhelpers.pipeline.execute import BACKGROUND_NICE

    nbdir, profiles = chain
    out = tmp_path / "run"
    result = run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                          overrides={"nap": 1.0}, jobs=2, html=False, echo=False)
    assert {r.status for r in result.notebooks} == {"ok"}
    m = read_metrics(out)
    assert m["02_mid"]["start"] < m["04_side"]["end"] and m["04_side"]["start"] < m["02_mid"]["end"]
    base = os.nice(0)
    assert m["02_mid"]["nice"] == base
    assert m["04_side"]["nice"] == min(base + BACKGROUND_NICE, 19)
    if m["04_side"]["group"]:  # Linux with autogroup: the kernel's own group is lowered too
        assert m["04_side"]["group"].strip().endswith(f"nice {BACKGROUND_NICE}")


def test_chain_lengths_count_the_notebooks_waiting_behind_each():
    from lfhelpers.pipeline.graph import Node, chain_lengths

    deps = {"01": set(), "02": {"01"}, "03": {"01", "02"}, "04": {"01"}, "05": {"03", "04"}}
    nodes = {s: Node(s, [], [], True, d) for s, d in deps.items()}
    assert chain_lengths(nodes, list(nodes)) == {"01": 4, "02": 3, "03": 2, "04": 2, "05": 1}
    # only among the notebooks given (those still to run)
    assert chain_lengths(nodes, ["02", "04", "05"]) == {"02": 1, "04": 2, "05": 1}


def test_unknown_parameter_stops_before_any_kernel_starts(chain, tmp_path):
    nbdir, profiles = chain
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"Did you mean beta\?[\s\S]*closest first: beta,"):
        run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                     overrides={"betta": 2}, echo=False)
    assert not out.exists()


def test_cli_typo_parameter_exits_2_with_valid_names(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--only", "03", "-p", "epoch=1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "-p epoch" in err and "closest first: epochs," in err
    assert not out.exists() and not list(tmp_path.glob("**/*.ipynb"))


def test_cli_run_options():
    from lfhelpers.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["run", "--force"]).force is True
    assert parse(["run", "--force", "03,06", "--jobs", "2"]).force == "03,06"
    assert parse(["run", "--dry-run"]).dry_run and parse(["run"]).force is None


def test_a_failure_beside_others_lets_them_finish_and_starts_nothing_new(chain, tmp_path):
    nbdir, profiles = chain
    write_nb(nbdir / "04_side.ipynb", 'out_dir = ""\ndata_dir = ""', "raise ValueError('side')")
    out = tmp_path / "run"
    with pytest.raises(PipelineError, match=r"04_side failed at cell \d+.*side"):
        run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                     overrides={"nap": 3.0}, jobs=2, html=False, echo=False)
    statuses = {n["stem"]: n["status"] for n in json.loads((out / "run.json").read_text())
                ["notebooks"]}
    assert statuses == {"01_make": "ok", "02_mid": "ok", "03_end": "skipped",
                        "04_side": "failed"}
    assert not (out / ".cache" / "04_side.json").exists()
    assert (out / ".cache" / "02_mid.json").exists()  # its result is kept for the next run


def test_publish_shows_key_figures_as_pictures(tmp_path):
    """reports/latest/README.md shows the key figures as PNGs that exist beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lfhelpers.pipeline import publish
    from lfhelpers.pipeline.report import NotebookRun, RunResult

    out = tmp_path / "run"
    (out / "figures").mkdir(parents=True)
    fig, ax = plt.subplots(figsize=(20, 4))
    ax.plot([0, 1], [0, 1])
    fig.savefig(out / "figures" / "03_confusion_matrix.png", dpi=150)
    fig.savefig(out / "figures" / "03_scratch_not_key.png", dpi=50)
    (out / "03_x.html").write_text("<html></html>")
    record_metrics(out, "03_x", {"test_top1": 0.95})
    result = RunResult("t", out, [NotebookRun(stem="03_x", parameters={}, status="ok")])
    target = publish(result, tmp_path / "latest")
    readme = (target / "README.md").read_text()
    assert "![" in readme and "figures/03_confusion_matrix.png" in readme
    assert "03_scratch_not_key" not in readme
    png = target / "figures" / "03_confusion_matrix.png"
    assert png.is_file() and png.stat().st_size < (out / "figures" / png.name).stat().st_size
    from PIL import Image

    with Image.open(png) as im:
        assert im.width <= 1400
    assert "| 03_x | test_top1 | 0.95 |" in readme


def test_native_stderr_stays_out_of_the_notebook(tmp_path):
    """C-level stderr (TensorFlow's start-up lines) goes to the run's log, not the report."""
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    write_nb(nbdir / "01_noise.ipynb", 'out_dir = ""\nseed = 0',
             "import os, sys\nos.write(2, b'E0000 failed call to cuInit\\n')\n"
             "print('python warning', file=sys.stderr)")
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("t:\n  all:\n    seed: 1\n")
    out = tmp_path / "run"
    run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles, echo=False)
    outputs = json.dumps(json.loads((out / "01_noise.ipynb").read_text())["cells"][-1]["outputs"])
    assert "cuInit" not in outputs and "python warning" in outputs
    assert "cuInit" in (out / "logs" / "kernel-native.log").read_text()


# --------------------------------------------------------------------------- fail early


def test_missing_input_stops_before_anything_runs_and_names_its_maker(tmp_path, capsys):
    """`--only 04` on a fresh folder used to run for minutes, then fail on data/clean."""
    out = tmp_path / "run"
    assert main(["run", "--profile", "smoke", "--only", "04", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "04_color_model needs data_dir" in err and "does not exist" in err
    assert "made by 01_crawl_cleanup" in err and "--only 01,04" in err
    assert "Traceback" not in err and not out.exists()


def test_inputs_made_by_a_selected_notebook_are_fine_and_makers_chain(chain, tmp_path):
    from lfhelpers.errors import DataError

    out = tmp_path / "run"
    # 03 reads 02's res.txt, and 02 reads 01's data: the hint names both makers
    with pytest.raises(DataError, match=r"03_end needs res_file[\s\S]*--only 01,02,03"):
        _run(chain, out, only="03")
    with pytest.raises(DataError, match=r"02_mid needs data_dir[\s\S]*--only 01,02,03"):
        _run(chain, out, only="02,03", dry_run=True)
    assert not out.exists()
    assert _run(chain, out, only="01,02,03") == {"01_make": "ok", "02_mid": "ok", "03_end": "ok"}
    assert _run(chain, out, only="03", force=True) == {"03_end": "ok"}  # its input is there now
    profiles = chain[1]
    profiles.write_text(profiles.read_text() + '  04_side:\n    data_dir: "{out}/typo"\n')
    with pytest.raises(DataError, match=r"04_side needs data_dir = .*typo.*no notebook makes it"):
        _run(chain, out)


def test_may_read_inputs_order_the_graph_but_may_be_absent(chain, tmp_path):
    nbdir, profiles = chain
    graph = profiles.with_name("graph.yaml")
    graph.write_text(graph.read_text().replace(
        '03_end:\n  reads: ["{res_file}"]', '03_end:\n  may_read: ["{res_file}"]'))
    write_nb(nbdir / "03_end.ipynb", 'out_dir = ""\nres_file = ""',
             "from pathlib import Path\nprint(Path(res_file).exists())")
    from lfhelpers.pipeline.graph import build_graph, load_graph

    nodes = build_graph(["02_mid", "03_end"], {"02_mid": {"res_file": "r"},
                                               "03_end": {"res_file": "r"}},
                        load_graph(graph), tmp_path)
    assert nodes["03_end"].deps == {"02_mid"} and nodes["03_end"].needs == {}
    assert _run(chain, tmp_path / "run", only="03") == {"03_end": "ok"}


def test_aug_dir_fallback_in_graph_yaml_agrees_with_the_augment_stage():
    """The runner derives an empty aug_dir from data (graph.yaml), not by importing augment."""
    from lfhelpers.augment import default_aug_dir
    from lfhelpers.pipeline.config import GRAPH_FILE
    from lfhelpers.pipeline.graph import load_graph, resolve_template

    fallbacks = load_graph(GRAPH_FILE).fallbacks
    for data_dir in ("data/clean/lostnet", "data/clean/lostnet/", "/abs/clean/분실물",
                     "clean/x", "clean", "photos", "/a/b/", "a/clean", "xclean/y",
                     "runs/smoke/data/clean"):
        got = resolve_template("{aug_dir}", {"data_dir": data_dir, "aug_dir": ""}, fallbacks)
        assert Path(got) == default_aug_dir(data_dir), data_dir


def test_the_generic_runner_imports_no_stage():
    import ast

    stages = {"data", "crawl", "augment", "models", "color", "similarity", "audit", "explore"}
    for path in sorted((ROOT / "lfhelpers" / "pipeline").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                parts = (node.module or "").split(".")
                top = parts[1] if node.level == 0 and parts[0] == "lfhelpers" and \
                    len(parts) > 1 else parts[0] if node.level == 2 else ""
                names = {a.name for a in node.names} if node.level == 2 and not node.module \
                    else set()
                assert top not in stages and not names & stages, (path.name, ast.dump(node))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[:2][-1] not in stages or \
                        not alias.name.startswith("lfhelpers."), (path.name, alias.name)


_HOLD = """
import sys, time
from lfhelpers.pipeline.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_the_same_folder_stops_at_once(tmp_path):
    import subprocess
    import time

    from lfhelpers.errors import BusyError
    from lfhelpers.pipeline.lock import run_lock

    out = tmp_path / "run"
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    with run_lock(out):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "lfhelpers", "run", "--profile", "smoke",
                               "--only", "01", "--out", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Another run is writing into" in proc.stderr and f"pid {__import__('os').getpid()}" \
            in proc.stderr
        assert time.monotonic() - started < 60
        assert not (out / "run.json").exists() and not (out / "logs").exists()
    # a holder that dies (killed, not released) leaves a file but no lock behind
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match="Another run"), run_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with run_lock(out) as path:
        assert path.is_file()


def test_damaged_fingerprints_and_metrics_are_ignored_with_a_reason(chain, tmp_path, caplog):
    """A truncated or ill-shaped file in DIR/.cache (or metrics.json) reruns, never crashes."""
    from lfhelpers.pipeline import format_plan

    nbdir, profiles = chain
    out = tmp_path / "run"
    assert set(_run(chain, out).values()) == {"ok"}
    fingerprint = out / ".cache" / "02_mid.json"
    fingerprint.write_bytes(fingerprint.read_bytes()[:40])  # a write cut short
    (out / ".cache" / "04_side.json").write_text('{"parameters": [], "stamp": "x"}')
    plan = format_plan(run_pipeline("t", out_dir=out, notebook_dir=nbdir, profiles_file=profiles,
                                    dry_run=True, echo=False))
    assert "02_mid: runs (its fingerprint is damaged (not valid JSON" in plan
    assert "04_side: runs (its fingerprint is damaged (its parameters is not a mapping)" in plan
    assert "01_make: cached" in plan
    with caplog.at_level("WARNING", logger="lfhelpers"):
        assert _run(chain, out) == {"01_make": "cached", "02_mid": "ok", "03_end": "ok",
                                    "04_side": "ok"}
    assert "Ignoring the damaged fingerprint" in caplog.text
    assert set(_run(chain, out).values()) == {"cached"}  # good fingerprints again

    metrics = out / "metrics.json"
    metrics.write_text(metrics.read_text()[:25])
    caplog.clear()
    with caplog.at_level("WARNING", logger="lfhelpers"):
        statuses = _run(chain, out)
    assert set(statuses.values()) == {"ok"}  # every notebook's figures were lost with the file
    assert "Ignoring the damaged" in caplog.text and "metrics.json" in caplog.text
    assert set(read_metrics(out)) == set(statuses)
