"""The HTML report in a real headless browser (Debian's chromium + chromedriver, driven by selenium):
every plot loads and the console stays clean. Skipped where no browser is installed; `make test`
installs one (apt-get install chromium chromium-driver) when it runs as root on Debian."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest
from report_store import build

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium") or "")
                 if p and os.path.exists(p)), None)
CHROMEDRIVER = next((p for p in ("/usr/bin/chromedriver", shutil.which("chromedriver") or "")
                     if p and os.path.exists(p)), None)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,2000")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium/chromedriver (apt-get install chromium chromium-driver)")


@pytest.fixture
def browser(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # never let selenium-manager look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def page_problems(driver, path: str) -> tuple[list, list, list]:
    """(images that did not load, console errors, external requests) of the page at ``path``."""
    driver.get("file://" + os.path.abspath(path))
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt]);")
    broken = [alt for complete, width, height, alt in images if not (complete and width > 0 and height > 0)]
    errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    return broken, errors, [r for r in resources if r.startswith(("http:", "https:"))]


@pytest.mark.timeout(300)
def test_every_plot_loads_and_the_console_is_clean(browser, tmp_path):
    from kvlab.report import build_report

    db = build(tmp_path / "results.db")
    paths = build_report(db, str(tmp_path / "report"))
    assert page_problems(browser, paths.index) == ([], [], [])
    n_images = browser.execute_script("return document.images.length;")
    assert n_images == len(paths.plots) >= 4
    assert "Effective budget" in browser.page_source

    # the check itself can fail: a truncated image is reported as broken
    html = pathlib.Path(paths.index).read_text(encoding="utf-8")
    start = html.index("base64,") + len("base64,")
    sabotaged = tmp_path / "sabotaged.html"
    sabotaged.write_text(html[:start] + "iVBORw0KGgo" + html[html.index('"', start):], encoding="utf-8")
    broken, _, _ = page_problems(browser, str(sabotaged))
    assert len(broken) == 1
