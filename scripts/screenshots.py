"""Take the dashboard screenshots in docs/screenshots/ with headless Debian Chromium.

Starts a throwaway Redis, the API with workers (tests/dashboard/server.py), fills a few queues with
jobs in every state, and photographs the main pages. Run: .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

from conveyor.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
SERVER = ROOT / "tests" / "dashboard" / "server.py"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def fill(c: httpx.Client) -> dict[str, str]:
    def add(queue: str, name: str, data: Any, **options: Any) -> str:
        r = c.post(f"/api/queues/{queue}/jobs", json={"name": name, "data": data, "options": options})
        r.raise_for_status()
        return str(r.json()["id"])

    for i in range(40):
        add("live", "echo", {"to": f"user{i}@example.com", "template": "welcome"})
    for i in range(6):
        add("live", "doomed", {"message": f"mailbox unavailable ({i})"})
    for i in range(3):
        add("shots", "slow", {"steps": 200, "step_s": 0.5, "report": f"monthly-{i}"})
    add("shots", "retried", {"invoice": 999}, attempts=4, backoff=600)
    c.post("/api/queues/alarm/pause").raise_for_status()
    for i in range(3):
        add("alarm", "echo", {"order": 500 + i})
    for i in range(5):
        add("shots", "echo", {"invoice": 1000 + i}, delay=3600, group=f"tenant-{i % 2}")
    for i in range(5):
        add("limited", "slow", {"steps": 100, "step_s": 0.5, "tenant": i % 2}, group=f"tenant-{'ab'[i % 2]}")
    flaky = add("retry", "flaky", {"message": "connection reset by peer", "order": 42}, attempts=1)
    add("xss", "echo", {"comment": "<script>alert(1)</script><img src=x onerror=alert(2)>"})
    c.post("/api/queues/pause/pause").raise_for_status()
    for i in range(4):
        add("pause", "echo", {"n": i})
    time.sleep(2)  # let workers finish the quick jobs (and the alert fire) before the photos
    c.post(f"/api/jobs/retry/{flaky}/retry").raise_for_status()
    time.sleep(1)
    return {"flaky": flaky}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with RedisServer() as redis:
        cmd = [sys.executable, str(SERVER), redis.url, "shots"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            base = f"http://127.0.0.1:{info['port']}"
            keys = info["keys"]
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {keys['admin']}"}) as c:
                ids = fill(c)
                page = c.get("/api/queues/live/jobs", params={"state": "failed", "limit": 1}).json()
                failed = page["jobs"][0]["id"]
            shoot(base, keys, ids["flaky"], failed)
        finally:
            proc.terminate()
            proc.wait(10)


def shoot(base: str, keys: dict[str, str], flaky: str, failed: str) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 820})
        page.goto(f"{base}/dashboard/")
        page.get_by_label("API key").wait_for()
        page.get_by_test_id("remember").check()
        page.screenshot(path=OUT / "signin.png")
        page.get_by_label("API key").fill(keys["admin"])
        page.get_by_role("button", name="Sign in").click()
        page.get_by_test_id("queues-table").wait_for()
        page.wait_for_timeout(2500)
        page.screenshot(path=OUT / "overview.png", full_page=True)
        for name, route, ready in [
            ("queue.png", "#/queues/live/failed", "jobs-table"),
            ("queue-delayed.png", "#/queues/shots/delayed", "jobs-table"),
            ("queue-limits.png", "#/queues/limited/waiting", "groups"),
            ("job-failed.png", f"#/jobs/live/{failed}", "section-error"),
            ("job-retried.png", f"#/jobs/retry/{flaky}", "timeline"),
            ("job-active.png", "#/jobs/shots/" + active_id(base, keys), "progress"),
            ("dead-letters.png", "#/dead", "dead-queue"),
            ("workers.png", "#/workers", "workers-table"),
            ("schedules.png", "#/schedules", "schedules-table"),
            ("alerts.png", "#/alerts", "alert-rules"),
        ]:
            page.evaluate("r => { location.hash = r; }", route)
            if ready == "dead-queue":
                page.locator(".dead-queue").first.wait_for()
            else:
                page.get_by_test_id(ready).wait_for()
            page.wait_for_timeout(600)
            page.screenshot(path=OUT / name, full_page=True)
        page.evaluate("r => { location.hash = r; }", "#/dead")
        page.locator(".dead-queue").first.wait_for()
        page.get_by_test_id("action-purge").first.click()
        page.locator("dialog[open]").wait_for()
        page.screenshot(path=OUT / "confirm-purge.png")
        page.get_by_test_id("confirm-cancel").click()
        ro = browser.new_page(viewport={"width": 1360, "height": 820})
        ro.goto(f"{base}/dashboard/#/jobs/live/{failed}")
        ro.get_by_label("API key").fill(keys["read"])
        ro.get_by_role("button", name="Sign in").click()
        ro.get_by_test_id("section-error").wait_for()
        ro.wait_for_timeout(500)
        ro.screenshot(path=OUT / "job-read-only.png", full_page=True)
        browser.close()


def active_id(base: str, keys: dict[str, str]) -> str:
    r = httpx.get(f"{base}/api/queues/shots/jobs", params={"state": "active", "limit": 1},
                  headers={"Authorization": f"Bearer {keys['admin']}"})
    return str(r.json()["jobs"][0]["id"])


if __name__ == "__main__":
    main()
