"""The dashboard's flow view in a real browser: the tree with states and links, Retry on a failed
node carrying the flow on, and the job page's parent and children links."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import Ui
from tests.dashboard.test_browser import job_state, wait_state

expect = pytest.importorskip("playwright.sync_api").expect


def test_flow_view_shows_the_tree_and_retrying_a_failed_node_finishes_the_flow(ui: Ui) -> None:
    body = {"queue": "live", "name": "echo", "data": {"flow": "root"}, "children": [
        {"queue": "bulk", "name": "echo", "data": {"n": 1}},
        {"queue": "retry", "name": "flaky", "data": {"message": "provider 429"}, "options": {"attempts": 1}},
    ]}
    with ui.server.http("enqueue") as c:
        r = c.post("/api/flows", json=body)
        assert r.status_code == 202, r.text
        root = r.json()["id"]
    with ui.server.http("admin") as c:
        kids = c.get(f"/api/jobs/live/{root}").json()["children"]
    flaky = kids[1]["id"]
    wait_state(ui.server, "live", root, "failed")  # fail policy: the failed child failed the parent
    page = ui.page
    ui.sign_in()
    page.goto(f"{ui.server.dashboard_url}#/jobs/live/{root}")
    expect(page.get_by_test_id("job-children").locator("li")).to_have_count(2)
    expect(page.get_by_test_id("job-error")).to_contain_text("ChildFailed")
    page.get_by_role("link", name="Flow view").click()
    nodes = page.get_by_test_id("flow-node")
    expect(nodes).to_have_count(3)
    expect(page.locator(f"li[data-id='{flaky}']")).to_have_attribute("data-state", "failed")
    expect(page.locator(f"li[data-id='{kids[0]['id']}']")).to_have_attribute("data-state", "completed")
    page.locator(f"li[data-id='{flaky}']").get_by_test_id("flow-retry").click()
    expect(page.locator(f"li[data-id='{root}']")).to_have_attribute("data-state", "completed", timeout=60_000)
    expect(page.locator(f"li[data-id='{flaky}']")).to_have_attribute("data-state", "completed")
    assert job_state(ui.server, "live", root) == "completed"
    # a child's job page links its parent
    page.locator(f"li[data-id='{flaky}'] a").first.click()
    expect(page.get_by_test_id("job-parent")).to_contain_text(root)
    page.get_by_test_id("job-parent").locator("a").click()
    expect(page.get_by_test_id("job-id")).to_have_text(root)
    assert ui.errors == []
    assert ui.csp_violations() == []
