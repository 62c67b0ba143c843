"""In a real browser (headless Chromium driven by Playwright): the chapters run in JupyterLab and show their figures, and the rendered
site loads with every page, link and image. Servers bind to 127.0.0.1 and are stopped by the tests; screenshots go to tests/artifacts/."""

import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin

import nbformat
import pytest

from conftest import REPO
from mimeo_nb.docs import CHAPTER_FIGURES, build_site

CHROMIUM = os.environ.get("MIMEO_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
LAB_CHAPTERS = ("00_data", "01_hog", "02_masking")


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        msg = f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium) or set MIMEO_CHROMIUM"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, data_root):
    """JupyterLab on 127.0.0.1 over a copy of the chapters (outputs cleared, so that every figure counted is a fresh one), with the
    environment a user has: no MPLBACKEND, no MIMEO_PROGRESS, so figures go inline and progress bars are widgets."""
    root = tmp_path_factory.mktemp("lab")
    (root / "nbs").mkdir()
    shutil.copy(REPO / "settings.ini", root)  # the chapters' last cell runs nbdev_export: it writes into this copy
    for name in (*LAB_CHAPTERS, "run"):
        nb = nbformat.read(REPO / "nbs" / f"{name}.ipynb", as_version=4)
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        nbformat.write(nb, root / "nbs" / f"{name}.ipynb")
    settings = root / "settings"  # every cell in the DOM (no windowing), no news or update pop-ups
    for ext, value in (
        ("notebook-extension/tracker", {"windowingMode": "none"}),
        ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        f = settings / f"@jupyterlab/{ext}.jupyterlab-settings"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "MIMEO_PROGRESS")}
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
        MIMEO_DATA=str(data_root),
    )
    port, token = free_port(), "mimeo-nb-test"
    log = open(root / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
        yield dict(base=base, token=token, root=root)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in the current tab
PROMPTS = """() => { const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
                      return {cells: p.length, numbered: p.filter(t => /\\[\\d+\\]/.test(t)).length, running: p.filter(t => t.includes('*')).length}; }"""


def kernel_state(lab, name):
    with urllib.request.urlopen(f"{lab['base']}/api/sessions?token={lab['token']}") as r:
        sessions = [s for s in json.loads(r.read()) if s["path"].endswith(f"{name}.ipynb")]
    return sessions[0]["kernel"]["execution_state"] if sessions else None


def run_all_in_lab(page, lab, name, timeout_s=900):
    "Open nbs/<name>.ipynb in JupyterLab, run all cells from the Run menu, wait until the kernel is done, save, return the saved notebook."
    page.goto(
        f"{lab['base']}/lab/tree/nbs/{name}.ipynb?reset&token={lab['token']}"
    )  # reset: no tabs restored from before
    page.wait_for_selector(f"{PANEL} .jp-CodeCell", timeout=120_000)
    t0 = time.time()
    while kernel_state(lab, name) != "idle":  # the kernel has started and is ready
        if time.time() - t0 > 180:
            pytest.fail(f"{name}: the kernel did not become idle: {kernel_state(lab, name)}")
        time.sleep(0.5)
    for attempt in range(3):  # Run > Run All Cells; again if a pop-up swallowed the click
        page.keyboard.press("Escape")
        page.click(".lm-MenuBar-item:has-text('Run')")
        page.click(".lm-Menu-item:has-text('Run All Cells')")
        try:
            page.wait_for_function(f"() => ({PROMPTS})().numbered + ({PROMPTS})().running > 0", timeout=30_000)
            break
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"lab-{name}-not-started-{attempt}.png"))
    else:
        pytest.fail(f"{name}: Run All Cells did not start the cells (screenshots in {ARTIFACTS})")
    last, since = None, time.time()
    while True:  # done: every cell numbered, or (after an error) nothing running and nothing changing for 5 s with an idle kernel
        st = page.evaluate(PROMPTS)
        if st != last:
            last, since = st, time.time()
        idle = st["running"] == 0 and kernel_state(lab, name) == "idle"
        if idle and (st["numbered"] == st["cells"] or time.time() - since > 5):
            break
        if time.time() - t0 > timeout_s:
            pytest.fail(f"{name}: still running after {timeout_s} s: {st}")
        time.sleep(1)
    path = lab["root"] / "nbs" / f"{name}.ipynb"
    before = path.stat().st_mtime_ns
    page.locator(f"{PANEL} .jp-Notebook").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")
    for _ in range(60):
        if path.stat().st_mtime_ns != before:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"{name}: JupyterLab did not save the notebook")
    time.sleep(1)
    return nbformat.read(path, as_version=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", LAB_CHAPTERS)
def test_chapter_runs_in_jupyterlab_and_shows_its_figures(browser, lab, name):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        nb = run_all_in_lab(page, lab, name)
        page.screenshot(path=str(ARTIFACTS / f"lab-{name}-run.png"))
        errors = [
            f"cell {i}: {o.ename}: {o.evalue}"
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "error"
        ]
        assert not errors, f"{name} has error outputs: {errors}"
        unexecuted = [
            i
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.source.strip() and c.execution_count is None
        ]
        assert not unexecuted, f"{name}: cells {unexecuted} did not run"
        stderr = " ".join(
            "".join(o.text)
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if o.output_type == "stream" and o.name == "stderr"
        )
        assert "TqdmWarning" not in stderr and "IProgress not found" not in stderr, stderr[:500]
        want = CHAPTER_FIGURES[name]
        shown = page.locator(f"{PANEL} .jp-OutputArea-output img").count()
        saved = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert shown == saved == want, f"{name}: {shown} images shown, {saved} saved, meant to show {want} (each once)"
        text_figures = [
            o["data"]["text/plain"]
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if "image/png" not in o.get("data", {}) and "<Figure size" in str(o.get("data", {}).get("text/plain", ""))
        ]
        assert not text_figures, f"{name}: figures shown as text: {text_figures}"
        page.locator(f"{PANEL} .jp-OutputArea-output img").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"lab-{name}.png"))
    finally:
        page.close()


def test_run_notebook_parameters_cell_is_tagged_in_jupyterlab(lab):
    "papermill finds the parameters through the cell tag: JupyterLab's contents API serves it on the first code cell of nbs/run.ipynb."
    with urllib.request.urlopen(f"{lab['base']}/api/contents/nbs/run.ipynb?content=1&token={lab['token']}") as r:
        nb = json.loads(r.read())["content"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), code[0]["metadata"]
    assert "mask: float" in code[0]["source"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site as README's command builds it (into a temporary folder), served on 127.0.0.1."
    out = build_site(tmp_path_factory.mktemp("site") / "_site")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield dict(base=f"http://127.0.0.1:{srv.server_address[1]}/", out=out)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow
def test_site_pages_links_and_images_load(browser, site):
    base = site["base"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(
        "**/*", lambda route: route.continue_() if route.request.url.startswith((base, "data:")) else route.abort()
    )
    try:
        todo, seen, pages, broken = [base], set(), {}, []
        while todo:
            url = todo.pop()
            if url in seen:
                continue
            seen.add(url)
            if not (url.endswith("/") or url.endswith(".html")):  # a file the site links to: it must exist
                r = page.request.get(url)
                if r.status != 200:
                    broken.append(f"{url} -> {r.status}")
                continue
            resp = page.goto(url, wait_until="load")
            if resp is None or resp.status != 200:
                broken.append(f"{url} -> {resp and resp.status}")
                continue
            page.wait_for_function("() => [...document.images].every(i => i.complete)")
            imgs = page.eval_on_selector_all(
                "article img", "els => els.map(e => [e.naturalWidth, e.getAttribute('src').slice(0, 80)])"
            )
            broken += [f"{url}: image {src} did not load" for w, src in imgs if w == 0]
            pages[url[len(base) :]] = len(imgs)
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                href = urldefrag(href)[0]
                if href.startswith(base) and "/search/" not in href and not href.endswith((".ipynb", ".xml", ".gz")):
                    todo.append(href)
        assert not broken, broken
        for name, n in CHAPTER_FIGURES.items():
            if name != "index":
                assert pages.get(f"{name}/", -1) >= n, (
                    f"site page {name}/ shows {pages.get(f'{name}/')} figures, meant {n}"
                )
        results_md = (REPO / "results" / "README.md").read_text()
        assert pages.get("results/", 0) >= results_md.count("](figures/"), pages.get("results/")
        for path, shot in (("", "home"), ("01_hog/", "hog"), ("results/", "results")):
            page.goto(urljoin(base, path), wait_until="load")
            if path == "01_hog/":
                page.locator("article img").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"site-{shot}.png"))
    finally:
        page.close()
    size = sum(f.stat().st_size for f in Path(site["out"]).rglob("*") if f.is_file())
    (ARTIFACTS / "site-size.txt").write_text(f"{size / 1e6:.1f} MB in {len(pages)} pages\n")
