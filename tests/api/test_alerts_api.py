"""`GET/PUT /api/alerts` and `DELETE /api/alerts/{id}`: scopes, validation, bounds, the code/api
split and the redaction of channel URLs for keys without admin. One test, as PUT replaces every API
rule under the shared prefix."""

from __future__ import annotations

from typing import Any

from conveyor import codec
from conveyor.alerts import AlertStore, parse_rule
from tests.api.conftest import Api

SLACK = "https://hooks.slack.com/services/T000/B000/secret-token"


def depth_rule(rule_id: str, queue: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "queue_depth", "id": rule_id, "queue": queue, "threshold": 100,
            "channels": [{"type": "slack", "url": SLACK}, {"type": "email", "to": ["ops@example.com"]}], **extra}


async def test_alerts_api(api: Api) -> None:
    store = AlertStore(api.app.client)
    code_rule = parse_rule(depth_rule(f"code-{api.queue}", api.queue))
    await store.put_rules([code_rule], source="code", replace=False)
    try:
        body = {"rules": [depth_rule(f"api-{api.queue}", api.queue, severity="critical"),
                          {"kind": "no_worker", "id": f"idle-{api.queue}", "queue": api.queue, "for_s": 60,
                           "channels": [{"type": "webhook", "url": "https://ops.example/hook"}]}]}
        assert (await api.http.put("/api/alerts", json=body)).status_code == 401
        assert (await api.http.put("/api/alerts", json=body, headers=api.auth("read"))).status_code == 403
        r = await api.http.put("/api/alerts", json=body, headers=api.auth("admin"))
        assert r.status_code == 200, r.text
        mine = {a["rule"]["id"]: a for a in r.json()["rules"] if a["rule"]["queue"] == api.queue}
        assert set(mine) == {f"api-{api.queue}", f"idle-{api.queue}", f"code-{api.queue}"}
        assert mine[f"api-{api.queue}"]["source"] == "api" and mine[f"code-{api.queue}"]["source"] == "code"
        assert mine[f"api-{api.queue}"]["rule"]["channels"][0]["url"] == SLACK  # admin sees it all
        assert mine[f"idle-{api.queue}"]["state"]["status"] == "ok"
        assert "budget" in r.json()["kinds"]

        read = await api.http.get("/api/alerts", headers=api.auth("read"))
        assert read.status_code == 200
        shown = {a["rule"]["id"]: a for a in read.json()["rules"]}[f"api-{api.queue}"]
        assert shown["rule"]["channels"][0]["url"] == "https://hooks.slack.com/…"  # the token is a secret
        assert shown["rule"]["channels"][1]["to"] == ["ops@example.com"]

        # Replacing keeps only what is given; code rules are not the API's to change.
        r = await api.http.put("/api/alerts", json={"rules": [body["rules"][1]]}, headers=api.auth("admin"))
        ids = {a["rule"]["id"] for a in r.json()["rules"]}
        assert f"api-{api.queue}" not in ids and {f"idle-{api.queue}", f"code-{api.queue}"} <= ids
        clash = await api.http.put("/api/alerts", json={"rules": [depth_rule(f"code-{api.queue}", api.queue)]},
                                   headers=api.auth("admin"))
        assert clash.status_code == 409
        assert f"idle-{api.queue}" in {i.rule.id for i in await store.all()}  # nothing half-written

        for bad in (
            {"rules": [depth_rule("x", api.queue, threshold=-1)]},
            {"rules": [{**depth_rule("x", api.queue), "kind": "no_such_kind"}]},
            {"rules": [depth_rule("x", api.queue, channels=[])]},
            {"rules": [depth_rule("x", api.queue, channels=[{"type": "slack", "url": "ftp://x"}])]},
            {"rules": [depth_rule("x", api.queue, channels=[{"type": "email", "to": ["a@b.c\r\nBcc: x@y"]}])]},
            {"rules": [depth_rule("bad id!", api.queue)]},
            {"rules": [depth_rule(f"r{i}", api.queue) for i in range(201)]},
            {"rules": [], "extra": 1},
        ):
            r = await api.http.put("/api/alerts", json=bad, headers=api.auth("admin"))
            assert r.status_code == 422, (bad, r.text)
        assert f"idle-{api.queue}" in {i.rule.id for i in await store.all()}

        assert (await api.http.delete(f"/api/alerts/code-{api.queue}", headers=api.auth("read"))).status_code == 403
        assert (await api.http.delete(f"/api/alerts/code-{api.queue}", headers=api.auth("admin"))).status_code == 204
        assert (await api.http.delete(f"/api/alerts/code-{api.queue}", headers=api.auth("admin"))).status_code == 404
    finally:
        await api.http.put("/api/alerts", json={"rules": []}, headers=api.auth("admin"))
        for info in await store.all():
            if info.rule.queue == api.queue:
                await store.delete_rule(info.rule.id)


async def test_alert_bodies_are_strict_and_stored_rules_stay_readable(api: Api) -> None:
    """`PUT /api/alerts` refuses, with a 422 naming the field, a value of another JSON type than the
    schema states, as the schedule PUT does; a rule stored with such values (an older release, a
    declaration in code) still reads. Before, `"threshold": "100"`, `"for_s": "60"`, `"enabled": 1`
    or `"yes"` and `"threshold": true` were taken and stored as numbers and flags."""
    store = AlertStore(api.app.client)
    kept = depth_rule(f"kept-{api.queue}", api.queue)
    assert (await api.http.put("/api/alerts", json={"rules": [kept]}, headers=api.auth())).status_code == 200
    try:
        for field, value in (("threshold", "100"), ("threshold", True), ("threshold", 1.5), ("for_s", "60"),
                             ("enabled", 1), ("enabled", "yes"), ("repeat_s", "3600"), ("severity", 1),
                             ("channels", [{"type": "email", "to": ["ops@example.com" + "m" * 320]}]),
                             ("channels", [{"type": "webhook", "url": "https://ops.example/hook", "extra": 1}])):
            body = {"rules": [depth_rule(f"lax-{api.queue}", api.queue, **{field: value})]}
            r = await api.http.put("/api/alerts", json=body, headers=api.auth())
            assert r.status_code == 422, (field, value, r.text)
            details = r.json()["error"]["details"]
            assert any(field in d["loc"] for d in details), (field, details)
        assert {i.rule.id for i in await store.all() if i.rule.queue == api.queue} == {kept["id"]}
        for field, value in (("for_s", 60), ("repeat_s", None)):  # an integer for a float, null where allowed
            body = {"rules": [depth_rule(f"ok-{api.queue}", api.queue, **{field: value})]}
            assert (await api.http.put("/api/alerts", json=body, headers=api.auth())).status_code == 200

        old = {**depth_rule(f"old-{api.queue}", api.queue), "threshold": "7", "for_s": "60", "enabled": 1}
        await api.app.client.hset(store.keys.rules, old["id"], codec.dumps(old).decode())
        await api.app.client.hset(store.keys.sources, old["id"], "api")
        r = await api.http.get("/api/alerts", headers=api.auth("read"))
        assert r.status_code == 200
        shown = {a["rule"]["id"]: a["rule"] for a in r.json()["rules"]}[old["id"]]
        assert (shown["threshold"], shown["for_s"], shown["enabled"]) == (7, 60.0, True)
    finally:
        await api.http.put("/api/alerts", json={"rules": []}, headers=api.auth("admin"))
        for info in await store.all():
            if info.rule.queue == api.queue:
                await store.delete_rule(info.rule.id)
