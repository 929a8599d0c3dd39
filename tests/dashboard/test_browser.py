"""The dashboard in a real browser against the real API, Redis and workers."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.dashboard.conftest import DashboardServer, Ui

expect = pytest.importorskip("playwright.sync_api").expect


def enqueue(server: DashboardServer, queue: str, name: str, data: Any = None, **options: Any) -> str:
    with server.http("enqueue") as c:
        r = c.post(f"/api/queues/{queue}/jobs", json={"name": name, "data": data or {}, "options": options})
        assert r.status_code == 202, r.text
        return str(r.json()["id"])


def job_state(server: DashboardServer, queue: str, job_id: str) -> str:
    with server.http("admin") as c:
        return str(c.get(f"/api/jobs/{queue}/{job_id}").json()["state"])


def wait_state(server: DashboardServer, queue: str, job_id: str, state: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (current := job_state(server, queue, job_id)) != state:
        assert time.monotonic() < deadline, f"job {job_id} stayed {current}, wanted {state}"
        time.sleep(0.05)


def test_sign_in_keeps_key_out_of_urls(ui: Ui) -> None:
    page = ui.page
    page.goto(ui.server.dashboard_url)
    page.get_by_label("API key").fill("cvk_0000000000000000_" + "0" * 64)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")

    ui.sign_in("admin")
    expect(page.get_by_test_id("identity")).to_contain_text("admin")
    expect(page.get_by_test_id("queues-table")).to_be_visible()
    key = ui.server.keys["admin"]
    assert key not in page.url
    assert page.evaluate("() => Object.values(sessionStorage)") == [key]
    page.reload()  # the session survives a reload of the tab
    expect(page.get_by_test_id("identity")).to_contain_text("admin")
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0
    assert ui.errors == []
    assert ui.csp_violations() == []  # the UI itself runs under the strict policy


def test_overview_updates_live_when_jobs_are_added(ui: Ui) -> None:
    page = ui.page
    ui.sign_in()
    row = page.locator("tr[data-queue='live']")
    expect(row.locator("td[data-state='completed']")).to_have_text("0")
    # The page follows its queues' events (GET /api/events) and re-reads itself when one arrives;
    # its fallback poll (15 s) is slower than `expect` waits (10 s), so the updates below are pushed.
    expect(page.locator("body")).to_have_attribute("data-live", "on")
    page.evaluate("() => { window.__sameDocument = true; }")
    ids = [enqueue(ui.server, "live", "echo", {"n": i}) for i in range(3)]
    expect(row.locator("td[data-state='completed']")).to_have_text("3")
    for job_id in ids:
        assert job_state(ui.server, "live", job_id) == "completed"
    assert page.evaluate("() => window.__sameDocument") is True  # updated without reloading
    # The hour chart now has completed bars, and the failure rate reads 0 %.
    expect(row.locator("svg.chart rect.bar-ok")).not_to_have_count(0)
    expect(row).to_contain_text("0.0 %")
    # Every queue in Redis is listed, the undeclared one too, and the tile counts them all.
    expect(page.locator("tr[data-queue='legacy'] [data-testid='undeclared']")).to_have_text("not declared")
    shown, rows = page.evaluate("""() => [
        document.querySelector("[data-testid=tile-queues] .tile-value").textContent,
        document.querySelectorAll("[data-testid=queues-table] tbody tr[data-queue]").length]""")
    assert int(shown) == rows >= 12
    page.locator("tr[data-queue='legacy'] a").first.click()
    expect(page.locator("a[data-tab='waiting'] .count")).to_have_text("1")
    expect(page.get_by_test_id("jobs-table")).to_contain_text("old-task")


def test_failed_job_can_be_opened_and_retried_until_it_completes(ui: Ui) -> None:
    page = ui.page
    job_id = enqueue(ui.server, "retry", "flaky", {"message": "disk full"}, attempts=1)
    wait_state(ui.server, "retry", job_id, "failed")
    ui.sign_in()
    page.locator("tr[data-queue='retry'] a").first.click()
    page.locator("a[data-tab='failed']").click()
    page.locator(f"tr[data-job='{job_id}'] a").click()
    expect(page.get_by_test_id("job-error")).to_contain_text("RuntimeError")
    expect(page.get_by_test_id("job-error")).to_contain_text("first run fails: disk full")
    expect(page.get_by_test_id("job-stack")).to_contain_text("Traceback")
    expect(page.get_by_test_id("timeline").locator("li")).to_have_count(1)
    page.get_by_test_id("action-retry").click()
    expect(page.locator(".job-header .badge")).to_have_text("completed", timeout=15_000)
    expect(page.get_by_test_id("job-result")).to_contain_text('"retried": true')
    expect(page.get_by_test_id("timeline").locator("li")).to_have_count(2)
    expect(page.get_by_test_id("timeline").locator("li").first).to_contain_text(" on ")  # worker of attempt 1
    expect(page.get_by_test_id("job-logs")).to_contain_text("flaky run starting")
    assert job_state(ui.server, "retry", job_id) == "completed"


def test_a_page_left_before_it_rendered_never_takes_over_from_the_next(ui: Ui) -> None:
    """The overview's first render is held until the job page opened after it has rendered; the
    job page must stay the live one and follow its job to the end."""
    page = ui.page
    with ui.server.http("admin") as c:
        assert c.post("/api/queues/late/pause").status_code == 200
    job_id = enqueue(ui.server, "late", "echo", {"late": True})
    held: list[Any] = []
    page.route("**/api/dashboard/stats", lambda route: held.append(route))
    ui.sign_in()  # lands on the overview, whose render waits for the held stats request
    ui.go(f"#/jobs/late/{job_id}")
    expect(page.locator(".job-header .badge")).to_have_text("waiting")
    assert held, "the overview asked for its stats"
    for route in held:
        route.continue_()
    with ui.server.http("admin") as c:
        assert c.post("/api/queues/late/resume").status_code == 200
    expect(page.locator(".job-header .badge")).to_have_text("completed", timeout=30_000)
    expect(page.get_by_test_id("job-result")).to_contain_text('"late": true')


def test_a_failed_job_retried_elsewhere_shows_its_new_run(ui: Ui) -> None:
    page = ui.page
    job_id = enqueue(ui.server, "retry", "flaky", {"message": "elsewhere"}, attempts=1)
    wait_state(ui.server, "retry", job_id, "failed")
    ui.sign_in()
    ui.go(f"#/jobs/retry/{job_id}")
    expect(page.locator(".job-header .badge")).to_have_text("failed")
    with ui.server.http("admin") as c:  # another operator, or the CLI
        assert c.post(f"/api/jobs/retry/{job_id}/retry").status_code == 200
    expect(page.locator(".job-header .badge")).to_have_text("completed", timeout=30_000)
    expect(page.get_by_test_id("job-result")).to_contain_text('"retried": true')


def test_pause_and_resume_a_queue(ui: Ui) -> None:
    page = ui.page
    ui.sign_in()
    ui.go("#/queues/pause")
    page.get_by_test_id("action-pause").click()
    expect(page.get_by_test_id("paused")).to_be_visible()
    with ui.server.http() as c:
        assert c.get("/api/queues/pause").json()["paused"] is True
    job_id = enqueue(ui.server, "pause", "echo", {"x": 1})
    expect(page.locator("a[data-tab='waiting'] .count")).to_have_text("1")
    deadline = time.monotonic() + 1.5  # a running worker would take it within milliseconds
    while time.monotonic() < deadline:
        assert job_state(ui.server, "pause", job_id) == "waiting"
        time.sleep(0.1)
    page.get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("running")).to_be_visible()
    wait_state(ui.server, "pause", job_id, "completed")
    expect(page.locator("a[data-tab='completed'] .count")).to_have_text("1")
    with ui.server.http() as c:
        assert c.get("/api/queues/pause").json()["paused"] is False


XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2; alert(document.domain)">'


def test_payload_markup_stays_inert_text(ui: Ui) -> None:
    page = ui.page
    ok_id = enqueue(ui.server, "xss", "echo", {"html": XSS})
    bad_id = enqueue(ui.server, "xss", "doomed", {"message": XSS})
    wait_state(ui.server, "xss", ok_id, "completed")
    wait_state(ui.server, "xss", bad_id, "failed")
    ui.sign_in()
    ui.go(f"#/jobs/xss/{ok_id}")
    expect(page.get_by_test_id("job-data")).to_contain_text(XSS.replace('"', '\\"'))
    expect(page.get_by_test_id("job-result")).to_contain_text("<script>")
    expect(page.get_by_test_id("job-logs")).to_contain_text("<img src=x onerror=")
    ui.go(f"#/jobs/xss/{bad_id}")
    expect(page.get_by_test_id("job-error")).to_contain_text(XSS)
    ui.go("#/dead")
    expect(page.locator(f"tr[data-job='{bad_id}']")).to_contain_text("<script>")
    ui.go("#/queues/xss/failed")
    page.get_by_test_id("search-name").fill("doomed")
    page.get_by_test_id("search-form").get_by_role("button", name="Search").click()
    expect(page.locator(f"tr[data-job='{bad_id}']")).to_be_visible()
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("() => window.__xss") is None
    assert ui.dialogs == []
    assert ui.errors == []
    assert ui.csp_violations() == []  # nothing even tried to run inline code


def test_read_only_key_sees_no_action_buttons(ui: Ui) -> None:
    page = ui.page
    job_id = enqueue(ui.server, "readonly", "doomed", {"message": "nope"})
    delayed_id = enqueue(ui.server, "readonly", "echo", {}, delay=600)
    wait_state(ui.server, "readonly", job_id, "failed")
    ui.sign_in("read")
    expect(page.get_by_test_id("identity")).to_contain_text("read-only")
    for route in ("#/queues/readonly/failed", f"#/jobs/readonly/{job_id}", "#/queues/readonly/delayed",
                  f"#/jobs/readonly/{delayed_id}", "#/dead"):
        ui.go(route)
        page.locator("main .page > *").first.wait_for()
        expect(page.locator("body")).to_have_attribute("data-live", "on")  # rendered, then following
        controls = page.locator("main button.action, main [data-testid^='bulk-'], main input[type=checkbox]")
        expect(controls).to_have_count(0)
    ui.go(f"#/jobs/readonly/{job_id}")
    expect(page.get_by_test_id("job-error")).to_contain_text("nope")
    expect(page.get_by_test_id("job-actions")).to_be_empty()
    with ui.server.http("read") as c:  # and the API refuses the actions themselves
        assert c.post(f"/api/jobs/readonly/{job_id}/retry").status_code == 403
        assert c.post(f"/api/dashboard/jobs/readonly/{job_id}/remove").status_code == 403


def test_dead_letters_purge_needs_confirmation(ui: Ui) -> None:
    page = ui.page
    ids = [enqueue(ui.server, "dead", "doomed", {"message": f"dead {i}"}) for i in range(2)]
    for job_id in ids:
        wait_state(ui.server, "dead", job_id, "failed")
    ui.sign_in()
    ui.go("#/dead")
    block = page.locator(".dead-queue[data-queue='dead']")
    expect(block).to_contain_text("2 failed")
    block.get_by_test_id("action-purge").click()
    expect(page.locator("dialog[open]")).to_contain_text("cannot be undone")
    page.get_by_test_id("confirm-cancel").click()
    expect(page.locator("dialog[open]")).to_have_count(0)
    assert job_state(ui.server, "dead", ids[0]) == "failed"
    block.get_by_test_id("action-purge").click()
    page.get_by_test_id("confirm-ok").click()
    expect(block).to_have_count(0)
    with ui.server.http() as c:
        assert c.get("/api/queues/dead").json()["counts"]["failed"] == 0
    assert re.search(r"#/dead$", page.url)


def test_bulk_promote_and_remove_and_search_by_id(ui: Ui) -> None:
    page = ui.page
    ids = [enqueue(ui.server, "bulk", "echo", {"i": i}, delay=600) for i in range(3)]
    ui.sign_in()
    ui.go("#/queues/bulk/delayed")
    for job_id in ids[:2]:
        page.locator(f"tr[data-job='{job_id}'] input[type=checkbox]").check()
    expect(page.locator(".bulk")).to_contain_text("2 selected")
    page.get_by_test_id("bulk-promote").click()
    for job_id in ids[:2]:
        wait_state(ui.server, "bulk", job_id, "completed")
    expect(page.locator("a[data-tab='delayed'] .count")).to_have_text("1")
    page.get_by_test_id("search-id").fill(ids[2])
    page.get_by_test_id("search-form").get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("jobs-table").locator("tbody tr")).to_have_count(1)
    page.locator(f"tr[data-job='{ids[2]}'] input[type=checkbox]").check()
    page.get_by_test_id("bulk-remove").click()
    page.get_by_test_id("confirm-ok").click()
    expect(page.locator(f"tr[data-job='{ids[2]}']")).to_have_count(0)
    with ui.server.http() as c:
        assert c.get(f"/api/jobs/bulk/{ids[2]}").status_code == 404


def test_workers_page_lists_the_registry(ui: Ui) -> None:
    page = ui.page
    with ui.server.http("read") as c:
        workers = c.get("/api/workers").json()["workers"]
    ui.sign_in("read")
    ui.go("#/workers")
    table = page.get_by_test_id("workers-table")
    if not workers:  # no registry writer installed: the page says so
        expect(table).to_contain_text("No workers online.")
        return
    row = table.locator(f"tr[data-worker='{workers[0]['id']}']")
    expect(row).to_contain_text(str(workers[0]["pid"]))
    expect(row).to_contain_text("live")
    expect(row).to_contain_text("ago")


def test_queue_page_shows_limits_and_group_backlog(ui: Ui) -> None:
    page = ui.page
    slow = {"steps": 20, "step_s": 0.25}
    for _ in range(3):
        enqueue(ui.server, "limited", "slow", slow, group="tenant-a")
    ui.sign_in("read")
    ui.go("#/queues/limited")
    limits = page.get_by_test_id("limits")
    expect(limits).to_contain_text("slots in use")
    expect(limits).to_contain_text("100 per 1 s")
    expect(limits).to_contain_text("tokens left")
    expect(limits).to_contain_text("in groups")
    groups = page.get_by_test_id("groups")
    expect(groups.locator("tr[data-group='tenant-a']")).to_be_visible()
    expect(groups).to_contain_text("groups known")


def test_limiters_page_shows_named_limiters(ui: Ui) -> None:
    page = ui.page
    ui.sign_in("read")
    ui.go("#/limiters")
    row = page.get_by_test_id("limiters-table").locator("tr[data-limiter='openai:gpt-4o-mini']")
    expect(row).to_contain_text("1 / 8 (adaptive)")  # one call still holds a slot
    expect(row).to_contain_text("750 in / 120 out tokens")
    expect(row).to_contain_text("requests:")
    assert ui.errors == []


def test_a_partitioned_queue_shows_and_follows_every_partition(ui: Ui) -> None:
    """Counts, the waiting list and a job page of a queue of three partitions; the job page follows
    its job's events in the job's own partition until it completes."""
    page = ui.page
    with ui.server.http("admin") as c:
        assert c.post("/api/queues/sharded/pause").status_code == 200
    ids = [enqueue(ui.server, "sharded", "echo", {"n": i}) for i in range(3)]
    assert sorted(i.split(".")[0] for i in ids) == ["P0", "P1", "P2"]  # one job in each partition
    ui.sign_in()
    ui.go("#/queues/sharded")
    expect(page.locator("a[data-tab='waiting'] .count")).to_have_text("3")
    for job_id in ids:
        expect(page.locator(f"tr[data-job='{job_id}']")).to_have_count(1)
    far = next(i for i in ids if i.startswith("P2."))
    ui.go(f"#/jobs/sharded/{far}")
    expect(page.locator(".job-header .badge")).to_have_text("waiting")
    with ui.server.http("admin") as c:
        assert c.post("/api/queues/sharded/resume").status_code == 200
    expect(page.locator(".job-header .badge")).to_have_text("completed", timeout=30_000)
    expect(page.get_by_test_id("job-result")).to_contain_text(f'"n": {ids.index(far)}')
    for job_id in ids:
        wait_state(ui.server, "sharded", job_id, "completed", timeout=30)
    assert ui.errors == []
