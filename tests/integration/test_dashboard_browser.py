"""The dashboard in a real browser: Debian's headless Chromium, driven by selenium through
chromedriver. The page shows the fleet, a service put into etcd appears without a reload, values
that try to be HTML stay text, an etcd outage shows "disconnected" and recovers, and the browser
logs no error (a Content-Security-Policy violation would be one). Screenshots go to the test's
tmp dir (`dashboard-connected.png`, `dashboard-disconnected.png`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support.dashboard import ENDPOINT, put, seed, start_dashboard
from tests.support.etcd import EtcdFactory, require_binary
from tests.support.lbgen_proc import LbgenProcesses, lbgen_processes  # noqa: F401
from tests.support.util import wait_until

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LBGEN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LBGEN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1100")
WAIT = 60.0  # a browser starting on a loaded 2-core machine


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_binary(CHROMIUM, "chromium (Debian package chromium)")
    require_binary(CHROMEDRIVER, "chromedriver (Debian package chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.execute_script("return document.getElementById(arguments[0]).textContent", element_id))


def has(driver: Any, selector: str) -> bool:
    return bool(driver.execute_script("return document.querySelector(arguments[0]) !== null", selector))


def test_the_page_follows_the_fleet_live(browser: Any, etcd_factory: EtcdFactory, etcd_prefix: str,
                                         lbgen_processes: LbgenProcesses, tmp_path: Path) -> None:  # noqa: F811
    etcd = etcd_factory()
    seed(etcd, etcd_prefix)
    dashboard = start_dashboard(lbgen_processes, etcd.url, etcd_prefix, "--token", "t0ken")
    browser.get(dashboard.url + "/?token=t0ken")
    wait_until(lambda: text_of(browser, "connection") == "connected", WAIT, "the page to connect")
    wait_until(lambda: has(browser, '[data-service="web"] tr[data-key="host-a.web.1"]'), WAIT, "service web")
    browser.execute_script("window.lbgenNoReload = true")  # gone if the page reloads

    put(etcd, f"{etcd_prefix}/services/api/endpoints/host-b.api.1", {**ENDPOINT, "node": "host-b"})
    put(etcd, f"{etcd_prefix}/services/api/spec", {"listen": 81, "path": "/<b id=injected>x</b>"})
    put(etcd, f"{etcd_prefix}/services/<img id=injected2 src=x>/spec", {"listen": 82})
    wait_until(lambda: has(browser, '[data-service="api"] tr[data-key="host-b.api.1"]'), WAIT, "service api live")
    wait_until(lambda: "<b id=injected>" in text_of(browser, "rejected"), WAIT, "the rejected value, as text")
    wait_until(lambda: "<img id=injected2 src=x>" in text_of(browser, "changes"), WAIT, "the odd key, as text")
    assert browser.execute_script("return window.lbgenNoReload") is True
    assert not has(browser, "#injected") and not has(browser, "#injected2") and not has(browser, "main img")
    assert "draining" in text_of(browser, "services") and "lb-1" in text_of(browser, "lbs")
    put(etcd, f"{etcd_prefix}/agents/host-c", {"docker_reachable": False, "docker_since": time.time() - 30,
                                              "error": "docker: connection refused", "version": "0.1.0"})
    wait_until(lambda: "UNREACHABLE" in text_of(browser, "agents"), WAIT, "an agent's presence live")
    assert "agent host-c: Docker unreachable" in text_of(browser, "problems")
    browser.save_screenshot(str(tmp_path / "dashboard-connected.png"))

    etcd.stop()
    wait_until(lambda: text_of(browser, "connection") == "disconnected", WAIT, "the page to show disconnected")
    assert "registry unreachable" in text_of(browser, "connection-detail")
    badge = "getComputedStyle(document.getElementById('connection'))"
    assert browser.execute_script(f"return {badge}.color !== {badge}.backgroundColor")  # readable
    assert has(browser, '[data-service="api"]')  # the last known fleet stays on the page
    browser.save_screenshot(str(tmp_path / "dashboard-disconnected.png"))

    etcd.start()
    wait_until(lambda: text_of(browser, "connection") == "connected", WAIT, "the page to reconnect")
    put(etcd, f"{etcd_prefix}/services/late/spec", {"listen": 83})
    wait_until(lambda: "/services/late/spec" in text_of(browser, "changes"), WAIT, "a change after the outage")
    assert browser.execute_script("return window.lbgenNoReload") is True
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], json.dumps(errors, indent=2)
    assert (tmp_path / "dashboard-disconnected.png").stat().st_size > 10_000
