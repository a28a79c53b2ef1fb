"""The explorer as a user sees it: Voilà serves notebook 07, headless Chromium drives it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LF_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LF_CHROMEDRIVER", "/usr/bin/chromedriver")

pytestmark = pytest.mark.slow


def _browser_or_skip() -> tuple[str, str]:
    chromium = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    driver = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no Chromium/chromedriver installed (apt-get install chromium "
                    "chromium-driver); set LF_CHROMIUM and LF_CHROMEDRIVER to use others")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")
    pytest.importorskip("voila", reason="voila is not installed (make setup installs it)")
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until Voilà listens (a page request would start a kernel just for the check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"Voilà exited early with code {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"Voilà did not listen on port {port} within {timeout} s")


#: Idle seconds before the test server culls a kernel (``make explore``: 900).
CULL_SECONDS = 20


@pytest.fixture()
def served_explorer(explore_params, smoke_run, tmp_path):
    """Notebook 07 with the smoke run's parameters, served by Voilà on a free local port, with
    ``make explore``'s culling settings but a short idle timeout."""
    import papermill as pm
    from test_explore import smoke_index_dir

    notebook = tmp_path / "07_explore.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "07_explore.ipynb"), str(notebook),
                        parameters={**explore_params, "projection": "pca",
                                    "index_dir": str(smoke_index_dir(smoke_run))},
                        prepare_only=True, progress_bar=False)
    port, token = _free_port(), os.urandom(12).hex()
    env = {**os.environ, "LF_PROJECT_ROOT": str(ROOT),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]))}
    log = (tmp_path / "voila.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voila", str(notebook), "--no-browser", "--Voila.ip=127.0.0.1",
         f"--port={port}", f"--token={token}",
         f"--MappingKernelManager.cull_idle_timeout={CULL_SECONDS}",
         "--MappingKernelManager.cull_interval=2", "--MappingKernelManager.cull_connected=True",
         "--MappingKernelManager.cull_busy=False",
         "--Voila.tornado_settings={'websocket_max_message_size': 33554432}"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}/?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_choosing_a_query_photo_shows_found_items(served_explorer, tmp_path):
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--window-size=1400,2000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(served_explorer)
        wait = WebDriverWait(driver, 240)  # a loaded shared machine can be slow
        # Each condition reads the page in one script call: the widgets re-render their HTML
        # whenever the state changes, so an element found in one call may be gone in the next.
        options_text = wait.until(lambda d: d.execute_script(
            "const s = document.querySelector('.lf-query-picker select');"
            "const cards = document.querySelectorAll('.lf-results .lf-card img');"
            "return s && cards.length ? Array.from(s.options, o => o.text) : null;"))
        assert len(options_text) > 1
        chosen = options_text[1].replace("\xa0", " ").split(" · ")[-1]  # option text keeps &nbsp;
        WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: Select(d.find_element(By.CSS_SELECTOR, ".lf-query-picker select"))
            .select_by_index(1) or True)
        sources = wait.until(lambda d: d.execute_script(
            "const q = document.querySelector('.lf-query');"
            "if (!q || !q.textContent.includes(arguments[0])) return null;"
            "const cards = document.querySelectorAll('.lf-results .lf-card img');"
            "return cards.length ? Array.from(cards, c => c.getAttribute('src')) : null;",
            chosen))
        assert all(src.startswith("data:image/jpeg") for src in sources)
        # the chosen found item's correspondence picture, drawn for this query's results
        picture = wait.until(lambda d: d.execute_script(
            "const c = document.querySelector('.lf-correspondences');"
            "if (!c || !c.textContent.includes(arguments[0])) return null;"
            "const img = c.querySelector('img');"
            "return img ? img.getAttribute('src').slice(0, 22) : null;", chosen))
        assert picture == "data:image/png;base64,"
        driver.save_screenshot(str(tmp_path / "explore.png"))
        body = driver.execute_script("return document.body.innerText")
        for bad in ("Traceback", "Error", "went wrong", "could not"):
            assert bad not in body, body[:2000]
        assert not driver.execute_script("return document.querySelectorAll('.lf-notice').length")

        # an upload over the limit: a message in the page, nothing sent
        # (the widget's file input is not in the page: the test gives it a file as a browser's
        # file chooser would, after a click on the upload button)
        driver.execute_script(
            "document.querySelector('.lf-uploader').click();"
            "const input = window.__lfFileInput, dt = new DataTransfer();"
            "dt.items.add(new File([new Uint8Array(21000000)], 'big.jpg', {type: 'image/jpeg'}));"
            "input.files = dt.files; input.dispatchEvent(new Event('change'));")
        refused = wait.until(lambda d: d.execute_script(
            "const m = document.querySelector('.lf-upload-refused');"
            "return m ? m.textContent : null;"))
        assert "big.jpg is too large" in refused

        # left alone past the cull time: the kernel is shut down, the page says so, and the
        # visitor's next click gives a fresh page with results
        origin = driver.execute_script("return performance.timeOrigin")
        WebDriverWait(driver, CULL_SECONDS + 60).until(lambda d: d.execute_script(
            "return document.querySelector('.lf-expired') !== null;"))
        driver.execute_script("document.body.dispatchEvent(new PointerEvent('pointerdown',"
                              " {bubbles: true}));")
        fresh = wait.until(lambda d: d.execute_script(
            "if (performance.timeOrigin === arguments[0]) return null;"
            "const cards = document.querySelectorAll('.lf-results .lf-card img');"
            "return cards.length || null;", origin))
        assert fresh > 0
    finally:
        driver.quit()
