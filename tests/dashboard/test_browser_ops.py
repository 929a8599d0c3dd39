"""Dashboard additions for operators, in a real browser: due and next-attempt times, the error
column, schedules, alerts, finding a job by id, bulk actions on a filtered selection, and the
opt-in "remember me" across tabs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.dashboard.conftest import UI_TIMEOUT_MS, DashboardServer, Ui
from tests.dashboard.test_browser import enqueue, job_state, wait_state

expect = pytest.importorskip("playwright.sync_api").expect


def test_due_and_next_attempt_times_and_the_error_column(ui: Ui) -> None:
    page = ui.page
    later = enqueue(ui.server, "timing", "echo", {"n": 1}, delay=600)
    again = enqueue(ui.server, "timing", "retried", {}, attempts=3, backoff=900)
    dead = enqueue(ui.server, "timing", "doomed", {"message": "card declined"})
    wait_state(ui.server, "timing", dead, "failed")
    with ui.server.http() as c:
        def retry_scheduled() -> bool:
            return bool(c.get(f"/api/jobs/timing/{again}").json()["next_attempt_ms"])

        _wait(retry_scheduled)
        due = c.get(f"/api/jobs/timing/{later}").json()
        assert due["state"] == "delayed" and due["due_ms"] > due["created_ms"] and due["next_attempt_ms"] is None
        retry = c.get(f"/api/jobs/timing/{again}").json()
        assert retry["attempts_made"] == 1 and retry["next_attempt_ms"] == retry["due_ms"]
    ui.sign_in()
    ui.go("#/queues/timing/delayed")
    expect(page.locator(f"tr[data-job='{later}'] [data-testid='due']")).to_contain_text("due ")
    expect(page.locator(f"tr[data-job='{later}'] [data-testid='due']")).to_contain_text("in 9 min")
    expect(page.locator(f"tr[data-job='{again}'] [data-testid='due']")).to_contain_text("next attempt")
    ui.go(f"#/jobs/timing/{again}")
    expect(page.get_by_test_id("job-due")).to_contain_text("in 14 min")
    expect(page.locator("dt", has_text="Next attempt")).to_be_visible()
    ui.go("#/queues/timing/failed")
    expect(page.locator(f"tr[data-job='{dead}'] [data-testid='job-error-cell']")).to_have_text(
        "Unrecoverable: card declined")


def _wait(predicate: Any, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_schedules_page_pauses_resumes_and_runs_now(ui: Ui) -> None:
    page = ui.page
    ui.sign_in()
    ui.go("#/schedules")
    row = page.locator("tr[data-schedule='hourly-report']")
    expect(row).to_contain_text("every 1 h 0 min")
    expect(page.locator("tr[data-schedule='conveyor-alerts']")).to_contain_text("built-in alerts")
    row.get_by_test_id("action-pause").click()
    expect(row.get_by_test_id("schedule-paused")).to_be_visible()
    with ui.server.http() as c:
        assert c.get("/api/schedules/hourly-report").json()["paused"] is True
    row.get_by_test_id("action-resume").click()
    expect(row.get_by_test_id("schedule-paused")).to_have_count(0)
    row.get_by_test_id("action-run-now").click()
    expect(page.locator(".notice", has_text="Run now")).to_contain_text("job sched:hourly-report:run-")
    with ui.server.http() as c:
        def ran() -> bool:
            r = c.get("/api/dashboard/queues/shots/jobs", params={"state": "completed", "name": "report"})
            return bool(r.json()["jobs"])

        _wait(ran)
        assert c.get("/api/schedules/hourly-report").json()["paused"] is False


def test_schedules_page_shows_a_schedule_edited_into_an_unreadable_definition(ui: Ui) -> None:
    """The API lists such a schedule apart (`broken`); the page showed only the readable ones, so a
    schedule no scheduler fires any more vanished from the dashboard without a word."""
    import redis

    from conveyor.schedules.keys import ScheduleKeys

    defs = ScheduleKeys(ui.server.prefix).defs
    with redis.Redis.from_url(ui.server.redis_url) as r:
        r.hset(defs, "hand-edited", "{not json")
    try:
        ui.sign_in()
        ui.go("#/schedules")
        row = ui.page.locator("tr[data-schedule='hand-edited']")
        expect(row).to_have_attribute("data-testid", "schedule-broken")
        expect(row).to_contain_text("cannot be read")
        expect(ui.page.locator("tr[data-schedule='hourly-report']")).to_contain_text("every 1 h 0 min")
    finally:
        with redis.Redis.from_url(ui.server.redis_url) as r:
            r.hdel(defs, "hand-edited")


def test_alerts_page_shows_the_active_alert_and_its_recovery(ui: Ui) -> None:
    page = ui.page
    with ui.server.http() as c:
        assert c.post("/api/queues/alarm/pause").status_code == 200
    job_id = enqueue(ui.server, "alarm", "echo", {"n": 1})
    ui.sign_in()
    expect(page.get_by_test_id("alert-count")).to_have_text("1", timeout=20_000)
    page.locator("a[data-nav='alerts']").click()
    expect(page.get_by_test_id("active-alerts").locator("li[data-alert='alarm-backlog']")).to_contain_text(
        "1 waiting jobs in alarm")
    rule = page.locator("tr[data-rule='alarm-backlog']")
    expect(rule.get_by_test_id("alert-status")).to_have_text("firing")
    expect(rule).to_contain_text("email ops@example.com")
    with ui.server.http() as c:
        assert c.post("/api/queues/alarm/resume").status_code == 200
    wait_state(ui.server, "alarm", job_id, "completed")
    expect(rule.get_by_test_id("alert-status")).to_have_text("ok", timeout=20_000)
    expect(page.get_by_test_id("no-alerts")).to_be_visible()
    notices = page.get_by_test_id("notices")
    expect(notices).to_contain_text("resolved")
    expect(notices).to_contain_text("fired")
    expect(page.get_by_test_id("alert-count")).to_be_hidden()
    assert ui.errors == [] and ui.csp_violations() == []


def test_find_a_job_by_id_from_any_page(ui: Ui) -> None:
    page = ui.page
    job_id = enqueue(ui.server, "timing", "echo", {"find": "me"}, delay=600, job_id=f"find-{uuid.uuid4().hex}")
    ui.sign_in("read")
    ui.go("#/workers")
    page.get_by_test_id("find-id").fill(job_id)
    page.get_by_test_id("find-id").press("Enter")
    expect(page.get_by_test_id("job-id")).to_have_text(job_id)
    assert f"#/jobs/timing/{job_id}" in page.url
    page.get_by_test_id("find-id").fill("no-such-job-anywhere")
    page.get_by_test_id("find-id").press("Enter")
    expect(page.get_by_test_id("find-none")).to_be_visible()


def test_bulk_retry_and_remove_act_on_every_job_the_filter_matches(ui: Ui) -> None:
    page = ui.page
    doomed = [enqueue(ui.server, "bulk", "doomed", {"message": f"no {i}"}) for i in range(30)]
    flaky = [enqueue(ui.server, "bulk", "flaky", {"message": f"once {i}"}, attempts=1) for i in range(3)]
    for job_id in doomed + flaky:
        wait_state(ui.server, "bulk", job_id, "failed")
    ui.sign_in()
    ui.go("#/queues/bulk/failed")
    expect(page.get_by_test_id("bulk-retry-matching")).to_have_count(0)  # only for a filtered view
    page.get_by_test_id("search-name").fill("flaky")
    page.get_by_test_id("search-form").get_by_role("button", name="Search").click()
    page.get_by_test_id("bulk-retry-matching").click()
    expect(page.locator("dialog[open]")).to_contain_text('named like "flaky"')
    page.get_by_test_id("confirm-ok").click()
    for job_id in flaky:
        wait_state(ui.server, "bulk", job_id, "completed")
    assert all(job_state(ui.server, "bulk", j) == "failed" for j in doomed[:3])
    page.get_by_test_id("search-name").fill("doomed")
    page.get_by_test_id("search-form").get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("jobs-table").locator("tbody tr")).to_have_count(25)  # one page of the 30
    page.get_by_test_id("bulk-remove-matching").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.get_by_test_id("jobs-table")).to_contain_text("No failed jobs match.")
    with ui.server.http() as c:
        assert c.get(f"/api/jobs/bulk/{doomed[-1]}").status_code == 404
        assert c.get("/api/queues/bulk").json()["counts"]["failed"] == 0


def _page(context: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    return page


def test_remember_me_keeps_the_key_for_new_tabs_until_sign_out(browser: Any, dashboard_server: DashboardServer) -> None:
    key = dashboard_server.keys["admin"]
    context = browser.new_context()
    try:
        first = _page(context)
        first.goto(dashboard_server.dashboard_url)
        first.get_by_label("API key").fill(key)
        first.get_by_test_id("remember").check()
        first.get_by_role("button", name="Sign in").click()
        expect(first.get_by_test_id("identity")).to_contain_text("admin")
        second = _page(context)  # a new tab of the same browser: signed in without asking
        second.goto(dashboard_server.dashboard_url + "#/workers")
        expect(second.get_by_test_id("identity")).to_contain_text("admin")
        assert key not in second.url
        assert key in second.evaluate("() => Object.values(sessionStorage)")
        other = browser.new_context()  # another browser profile gets nothing
        try:
            stranger = _page(other)
            stranger.goto(dashboard_server.dashboard_url)
            expect(stranger.get_by_label("API key")).to_be_visible()
        finally:
            other.close()
        second.get_by_test_id("sign-out").click()  # signs every remembered tab out
        expect(first.get_by_label("API key")).to_be_visible()
        assert first.evaluate("() => sessionStorage.length") == 0
        third = _page(context)
        third.goto(dashboard_server.dashboard_url)
        expect(third.get_by_label("API key")).to_be_visible()
    finally:
        context.close()


def test_without_remember_me_a_new_tab_asks_for_the_key(browser: Any, dashboard_server: DashboardServer) -> None:
    context = browser.new_context()
    try:
        first = _page(context)
        first.goto(dashboard_server.dashboard_url)
        first.get_by_label("API key").fill(dashboard_server.keys["read"])
        first.get_by_role("button", name="Sign in").click()
        expect(first.get_by_test_id("identity")).to_contain_text("read-only")
        second = _page(context)
        second.goto(dashboard_server.dashboard_url)
        expect(second.get_by_label("API key")).to_be_visible()
        expect(first.get_by_test_id("identity")).to_be_visible()  # the first tab keeps its own session
    finally:
        context.close()


