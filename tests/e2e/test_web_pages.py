"""The wallboard and agent desktop pages in Debian's Chromium (Playwright), against the real daemon."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import DaemonFactory, DaemonProcess
from tests.e2e.test_api import AGENT_1001, EXTRA, SUPERVISOR

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip


@pytest.fixture
def daemon(start_daemon: DaemonFactory) -> DaemonProcess:
    d = start_daemon(EXTRA)
    if d.get("/wallboard")[0] == 404:
        pytest.fail("add_web_routes not wired into engine/daemon.py")
    return d


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _log_in(page: Page, url: str, token: str) -> None:
    page.goto(url)
    page.fill("#token", token)
    page.press("#token", "Enter")


def _available(daemon: DaemonProcess, agent_id: str) -> str:
    req = urllib.request.Request(daemon.base_url + "/api/v1/agents")
    req.add_header("Authorization", f"Bearer {SUPERVISOR}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        agents = json.loads(resp.read())
    return next(a["state"] for a in agents if a["id"] == agent_id)


def test_agent_ready_and_lunch_show_on_both_pages(daemon: DaemonProcess, browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # Two of today's finished support calls rated by the post-call survey (4 and 5), one not asked.
    with sqlite3.connect(daemon.workdir / "var" / "acd.sqlite3") as conn:
        conn.executemany(
            "INSERT INTO calls (id, sip_call_id, queue, arrived_at, ended_at, disposition, csat_score) "
            "VALUES (?, 'x', 'support', ?, ?, 'answered', ?)",
            [
                (f"r{i}", time.time() - 6 + i, time.time() - 5 + i, score)
                for i, score in enumerate((4, 5, None))
            ],
        )
    board = browser.new_page(viewport={"width": 1920, "height": 1080})
    _log_in(board, daemon.base_url + "/wallboard", SUPERVISOR)
    expect(board.locator("#conn")).to_have_text("live")
    expect(board.locator('[data-queue="support"] .csat')).to_have_text(" · CSAT 4.5 (2)")
    expect(board.locator('[data-queue="sales"] .csat')).to_have_count(0)  # no answers: not shown
    avail = board.locator('[data-queue="support"] [data-state="available"]')
    expect(avail).to_have_text("available 0")

    desk = browser.new_page(viewport={"width": 1280, "height": 800})
    _log_in(desk, daemon.base_url + "/agent", AGENT_1001)
    desk.click("#ready")
    expect(desk.locator("#state")).to_have_text("available")
    assert _available(daemon, "1001") == "available"
    expect(avail).to_have_text("available 1", timeout=4000)  # before the 5 s fallback refresh

    desk.select_option("#reason", "lunch")
    desk.click("#not-ready")
    expect(desk.locator("#state")).to_have_text("not ready (lunch)")
    expect(board.locator('[data-queue="support"] [data-state="not_ready"]')).to_have_text(
        "not ready 1", timeout=4000
    )
    board.screenshot(path=str(ARTIFACTS / "wallboard.png"))
    desk.screenshot(path=str(ARTIFACTS / "agent.png"))

    daemon.stop()
    expect(board.locator("#conn")).to_have_text("disconnected", timeout=10000)


def test_wrong_token_shows_error(daemon: DaemonProcess, browser: Browser) -> None:
    page = browser.new_page()
    _log_in(page, daemon.base_url + "/agent", "wrong-token-xxxxxxxx")
    expect(page.locator("#error")).to_contain_text("token rejected")
