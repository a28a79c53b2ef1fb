"""Load test of the served explorer: visitors in real headless Chromium, memory, and culling.

Voilà serves notebook 07 on 127.0.0.1 (only) with ``make explore``'s culling settings but a
short idle timeout. ``--visitors`` headless Chromium sessions open the page at once; each waits
for its first found items, picks ``--picks`` other lost photos and moves the ``k`` slider
``--moves`` times (keyboard on the slider handle), each time waiting for the results to be
redrawn. Then every browser closes, and the test waits for the server to cull the kernels.

Reported: time to first result (median, p95: from the page request to the first found items
in the page), update latency (p95: from the action to the redrawn results), the peak memory
of the whole server (Voilà and every kernel: RSS summed, sampled every 0.25 s), the resident
memory of each visitor's kernel, whether every session got its results, and the memory after
the cull against the server's own before the first visit.

Bounded: one page request per visitor (plus its picks and moves), ``--deadline`` seconds in
all; the browsers only reach 127.0.0.1.

Data: the real lostnet outputs when they exist (``data/clean/lostnet``,
``models/search/lostnet``), else a finished smoke run (``--smoke-run``). The shared state is
prepared (once) before the server starts, as a finished pipeline run leaves it.

Usage::

    python benchmarks/bench_explore_load.py [--visitors 10] [--cull 20] [--smoke-run DIR]
        [--out benchmarks/results/bench_explore_load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REAL = {"data_dir": "data/clean/lostnet", "index_dir": "models/search/lostnet",
        "classifier_model": "models/xception_lostnet.keras",
        "color_model": "models/color_names.joblib", "color_source": "codingtrain_colors",
        "cache_dir": "data/cache", "run_dir": ""}

RESULTS_JS = ("const r = document.querySelector('.lf-results');"
              "if (!r) return null;"
              "return [r.dataset.seq, r.querySelectorAll('.lf-card img').length];")


def choose_inputs(smoke_run: str) -> tuple[str, dict]:
    """``("lostnet", params)`` when the real outputs exist, else the smoke run's."""
    if all((ROOT / REAL[k]).exists() for k in ("data_dir", "index_dir")):
        return "lostnet", dict(REAL)
    if not smoke_run:
        sys.exit("No lostnet outputs (data/clean/lostnet, models/search/lostnet) and no "
                 "--smoke-run DIR.")
    run = Path(smoke_run).resolve()
    index = run / "models" / "search"
    if not (index / "recipe.json").is_file():
        index = run / "models" / "search-explore-test"  # the one tests/test_explore.py builds
    return f"smoke fixture ({run.name})", {
        "data_dir": str(run / "data" / "clean"), "index_dir": str(index),
        "classifier_model": str(run / "models" / "xception_smoke.keras"),
        "color_model": str(run / "models" / "color_names.joblib"),
        "cache_dir": str(run / "cache"), "run_dir": str(run)}


def tree_rss(pid: int, tries: int = 5) -> tuple[int, dict[int, int]]:
    """RSS in bytes of a process and its descendants (total, per kernel child); retried when a
    child exits during the walk; ``(0, {})`` when the process is gone."""
    import psutil

    for _ in range(tries):
        got = _tree_rss(pid)
        if got[0] or not psutil.pid_exists(pid):
            return got
        time.sleep(0.05)
    return got


def _tree_rss(pid: int) -> tuple[int, dict[int, int]]:
    import psutil

    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        kids = {}
        for child in proc.children(recursive=True):
            try:
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            if "ipykernel" in " ".join(child.cmdline()):
                kids[child.pid] = rss
        return total, kids
    except psutil.Error:
        return 0, {}


class Sampler(threading.Thread):
    """Samples the server's memory every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak, self.kernel_peak, self.max_kernels = 0, 0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            total, kids = tree_rss(self.pid)
            self.peak = max(self.peak, total)
            if kids:
                self.kernel_peak = max(self.kernel_peak, max(kids.values()))
            self.max_kernels = max(self.max_kernels, len(kids))
            time.sleep(self.every)


def visitor(i: int, url: str, args: argparse.Namespace, out: dict, barrier: threading.Barrier,
            workdir: Path) -> None:
    """One visitor: open, wait for results, pick lost photos, move the k slider."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    record: dict = {"visitor": i, "ok": False, "updates": []}
    out[i] = record
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-extensions",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={workdir / f'chromium-{i}'}", "--window-size=1300,1600"):
        options.add_argument(arg)
    driver = None
    try:
        driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
        barrier.wait(timeout=120)
        start = time.perf_counter()
        driver.get(url)
        wait = WebDriverWait(driver, args.deadline)
        first = wait.until(lambda d: (lambda r: r if r and r[1] else None)(
            d.execute_script(RESULTS_JS)))
        record["first_result_s"] = time.perf_counter() - start
        seq = first[0]

        def changed(action) -> float:
            nonlocal seq
            t = time.perf_counter()
            action()
            got = WebDriverWait(driver, 120).until(lambda d: (
                lambda r: r if r and r[0] != seq and r[1] else None)(
                d.execute_script(RESULTS_JS)))
            seq = got[0]
            return time.perf_counter() - t

        n_options = driver.execute_script(
            "return document.querySelector('.lf-query-picker select').options.length")
        for j in range(args.picks):
            index = (1 + i * args.picks + j) % max(n_options, 1)
            record["updates"].append(("pick", changed(lambda index=index: driver.execute_script(
                "const s = document.querySelector('.lf-query-picker select');"
                "s.selectedIndex = arguments[0];"
                "s.dispatchEvent(new Event('change', {bubbles: true}));", index))))
        for j in range(args.moves):
            key = Keys.ARROW_RIGHT if j % 2 == 0 else Keys.ARROW_LEFT
            record["updates"].append(("slider", changed(lambda key=key: driver.find_element(
                By.CSS_SELECTOR, ".lf-k .noUi-handle, .lf-k [role=slider]").send_keys(key))))
        record["ok"] = True
    except Exception as exc:  # noqa: BLE001 - recorded per visitor, reported below
        record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                pass


def pct(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=10)
    parser.add_argument("--picks", type=int, default=2, help="lost photos chosen per visitor")
    parser.add_argument("--moves", type=int, default=3, help="slider moves per visitor")
    parser.add_argument("--cull", type=int, default=20, help="idle seconds before a cull")
    parser.add_argument("--deadline", type=int, default=420,
                        help="seconds a visitor waits for its first result")
    parser.add_argument("--smoke-run", default=os.environ.get("LF_SMOKE_RUN", ""))
    parser.add_argument("--chromium", default=os.environ.get("LF_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--chromedriver",
                        default=os.environ.get("LF_CHROMEDRIVER", "/usr/bin/chromedriver"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "bench_explore_load.json"))
    args = parser.parse_args()
    for tool in (args.chromium, args.chromedriver):
        if not (Path(tool).is_file() or shutil.which(tool)):
            sys.exit(f"{tool} not found (apt-get install chromium chromium-driver)")
    import papermill as pm

    from lfhelpers import explore
    from lfhelpers.paths import use_project_root

    use_project_root()
    data, params = choose_inputs(args.smoke_run)
    print(f"data: {data}; preparing the shared state (once per run) ...", flush=True)
    t = time.perf_counter()
    view = explore.open_explorer(params["data_dir"], params["run_dir"],
                                 params["classifier_model"], params["index_dir"],
                                 params["color_model"], params.get("color_source", ""),
                                 cache_dir=params["cache_dir"], projection="pca")
    if view.explorer is None or not view.explorer.ready:
        sys.exit(view.problem or view.explorer.missing.get("model"))
    n_gallery = len(view.explorer.gallery)
    prepare_s = time.perf_counter() - t
    del view

    workdir = Path(tempfile.mkdtemp(prefix="bench-explore-"))
    notebook = workdir / "07_explore.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "07_explore.ipynb"), str(notebook),
                        parameters={**params, "projection": "pca"}, prepare_only=True,
                        progress_bar=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = os.urandom(12).hex()
    env = {**os.environ, "LF_PROJECT_ROOT": str(ROOT),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]))}
    log = (workdir / "voila.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(notebook), "--no-browser", "--Voila.ip=127.0.0.1",
         f"--port={port}", f"--token={token}",
         f"--MappingKernelManager.cull_idle_timeout={args.cull}",
         "--MappingKernelManager.cull_interval=2", "--MappingKernelManager.cull_connected=True",
         "--MappingKernelManager.cull_busy=False",
         "--Voila.tornado_settings={'websocket_max_message_size': 33554432}"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/?token={token}"
    report: dict = {"data": data, "n_gallery": n_gallery, "visitors": args.visitors,
                    "picks": args.picks, "moves": args.moves, "cull_idle_timeout_s": args.cull,
                    "prepare_s": round(prepare_s, 1), "machine": platform.platform(),
                    "cpus": os.cpu_count()}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        time.sleep(2)
        base, _ = tree_rss(server.pid)
        report["server_alone_mb"] = round(base / 2**20)
        sampler = Sampler(server.pid)
        sampler.start()
        out: dict = {}
        barrier = threading.Barrier(args.visitors)
        threads = [threading.Thread(target=visitor, args=(i, url, args, out, barrier, workdir))
                   for i in range(args.visitors)]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(args.deadline + 600)
        report["sessions_s"] = round(time.perf_counter() - start, 1)
        _, kernels = tree_rss(server.pid)
        firsts = [r["first_result_s"] for r in out.values() if "first_result_s" in r]
        updates = [s for r in out.values() for _, s in r["updates"]]
        report.update({
            "all_sessions_got_results": all(r["ok"] for r in out.values())
            and len(out) == args.visitors,
            "sessions_ok": sum(r["ok"] for r in out.values()),
            "errors": [r["error"] for r in out.values() if "error" in r],
            "first_result_median_s": round(statistics.median(firsts), 2) if firsts else None,
            "first_result_p95_s": round(pct(firsts, 0.95), 2) if firsts else None,
            "update_median_s": round(statistics.median(updates), 3) if updates else None,
            "update_p95_s": round(pct(updates, 0.95), 3) if updates else None,
            "n_updates": len(updates),
            "server_peak_mb": round(sampler.peak / 2**20),
            "kernel_peak_mb": round(sampler.kernel_peak / 2**20),
            "kernels_at_once": sampler.max_kernels,
            "kernel_rss_after_sessions_mb": sorted(round(v / 2**20) for v in kernels.values()),
        })
        # every browser is closed: wait for the cull
        t = time.perf_counter()
        limit = args.cull + 60
        while time.perf_counter() - t < limit:
            total, kids = tree_rss(server.pid)
            if not kids:
                break
            time.sleep(1)
        sampler.stop.set()
        time.sleep(3)
        total, kids = tree_rss(server.pid)
        report.update({"culled_after_s": round(time.perf_counter() - t, 1),
                       "kernels_left": len(kids), "server_after_cull_mb": round(total / 2**20),
                       "server_alive": server.poll() is None})
        report["memory_returned"] = (server.poll() is None and not kids
                                     and 0 < total <= base * 1.25 + 50 * 2**20)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if server.returncode not in (None, 0, -15):
            report["server_log_tail"] = (workdir / "voila.log").read_text()[-2000:]
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
