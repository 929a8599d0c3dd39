"""`conveyor keys create|list|revoke`: the key is printed once, listed without secrets, revoked."""

from __future__ import annotations

import re
import uuid

from typer.testing import CliRunner

from conveyor.api.keys import hash_secret
from conveyor.cli import app


def test_keys_create_list_revoke(redis_url: str) -> None:
    runner = CliRunner()
    prefix = f"t{uuid.uuid4().hex[:8]}"
    common = ["--redis-url", redis_url, "--prefix", prefix]
    made = runner.invoke(
        app,
        [
            "keys",
            "create",
            "billing-service",
            "-s",
            "enqueue",
            "-s",
            "read-data",
            "--rate-limit",
            "50",
            *common,
        ],
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"cvk_([0-9a-f]{16})_([0-9a-f]{64})", token)
    assert match, made.stdout
    key_id, secret = match.groups()

    listed = runner.invoke(app, ["keys", "list", *common])
    assert listed.exit_code == 0
    assert key_id in listed.stdout and "billing-service" in listed.stdout
    assert "scopes=enqueue,read-data" in listed.stdout and "rate=50" in listed.stdout
    assert secret not in listed.stdout and hash_secret(secret) not in listed.stdout

    assert runner.invoke(app, ["keys", "revoke", key_id, *common]).exit_code == 0
    assert key_id not in runner.invoke(app, ["keys", "list", *common]).stdout
    gone = runner.invoke(app, ["keys", "revoke", key_id, *common])
    assert gone.exit_code == 1

    bad = runner.invoke(app, ["keys", "create", "x", "-s", "superuser", *common])
    assert bad.exit_code == 2 and "unknown scope" in bad.output
