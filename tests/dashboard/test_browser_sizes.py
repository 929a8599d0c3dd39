"""Values larger than an event carries (1 KiB) show whole on the live job page: its events carry only
their `size` (docs/events.md), and the page reads the value from the job record and the job's event
stream, which reads a large output piece back from the stored output."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import Ui
from tests.dashboard.test_browser import enqueue, wait_state

expect = pytest.importorskip("playwright.sync_api").expect


def test_a_live_job_shows_its_large_progress_and_output_whole(ui: Ui) -> None:
    page = ui.page
    job_id = enqueue(ui.server, "sizes", "large")
    wait_state(ui.server, "sizes", job_id, "active", timeout=60)
    ui.sign_in()
    ui.go(f"#/jobs/sizes/{job_id}")
    expect(page.get_by_text("No progress reported.")).to_be_visible()
    enqueue(ui.server, "sizes", "go", {"job": job_id})  # the job reports now, while the page is open
    expect(page.get_by_test_id("progress-json")).to_contain_text("end of the progress")
    expect(page.get_by_test_id("progress-json")).to_contain_text("p" * 3000)
    expect(page.get_by_test_id("job-output")).to_have_text("o" * 3000 + " end of the output")
    with ui.server.http("read") as c:
        events = c.get(f"/api/dashboard/jobs/sizes/{job_id}/details").json()["events"]
    progress = [e for e in events if e["type"] == "progress"]
    assert progress and "progress" not in progress[-1] and int(progress[-1]["size"]) > 3000, progress
    output = [e for e in events if e["type"] == "output"]
    assert output and "chunk" not in output[-1] and int(output[-1]["size"]) > 3000, output
    with ui.server.http("admin") as c:
        assert c.delete(f"/api/jobs/sizes/{job_id}").status_code < 300
    wait_state(ui.server, "sizes", job_id, "cancelled", timeout=60)
    assert not ui.errors
