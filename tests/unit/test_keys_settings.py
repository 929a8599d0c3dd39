from __future__ import annotations

import pytest

from conveyor import ConfigurationError
from conveyor.redis.connection import _split_cluster_flag, connect, connect_sync, redact
from conveyor.redis.keys import QueueKeys
from conveyor.settings import Settings


def test_every_queue_key_shares_one_hash_tag() -> None:
    k = QueueKeys("emails")
    names = [k.meta, k.ready, k.delayed, k.active, k.completed, k.failed, k.cancelled, k.events, k.wake,
             k.job("1"), k.log("1"), k.idempotency("x")]
    assert all(n.startswith("cv:{emails}:") for n in names)


@pytest.mark.parametrize("bad", ["", "a b", "q{x}", "a:b", "-x", "x" * 101])
def test_bad_queue_names(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        QueueKeys(bad)


def test_url_forms() -> None:
    assert _split_cluster_flag("redis+cluster://h:7000/0") == ("redis://h:7000/0", True)
    assert _split_cluster_flag("redis://h:7000/0?cluster=true")[1] is True
    assert _split_cluster_flag("rediss://h/0")[1] is False
    with pytest.raises(ConfigurationError):
        _split_cluster_flag("http://h")
    assert redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://u:secret@[::1/0") == "redis://***@[::1/0"  # unparseable: still no password


@pytest.mark.parametrize(
    "url",
    ["redis://h:99999/0", "redis://u:secret@h:port/0", "redis://:secret@[::1/0", "redis://h:1/0?socket_timeout=x",
     "redis+cluster://h:99999", "rediss://h:-1/0"],
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    for make in (connect, connect_sync):
        with pytest.raises(ConfigurationError, match="invalid Redis URL") as caught:
            make(url)
        assert "secret" not in str(caught.value)


def test_settings_from_env_rejects_unknown_names() -> None:
    s = Settings.from_env({"REDIS_URL": "redis://h/0", "CONVEYOR_PREFIX": "app"})
    assert s.redis_url == "redis://h/0" and s.prefix == "app"
    with pytest.raises(ConfigurationError, match="CONVEYOR_TYPO"):
        Settings.from_env({"CONVEYOR_TYPO": "1"})
    assert Settings.from_env({"CONVEYOR_CONCURRENCY_EMAILS": "3"}).prefix == "cv"
