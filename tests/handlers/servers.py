"""Real local peers for the handler tests: an OpenAI-compatible chat server, an HTTP receiver that
verifies webhook signatures (with the `standardwebhooks` package, as a customer would) and serves
files, and an SMTP server with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from standardwebhooks import Webhook, WebhookVerificationError

from conveyor.testing import free_port


class HttpServer:
    """An aiohttp app on a free loopback port, started in the test's event loop; `hits` lists every
    request that reached it (method and path)."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, str]] = []

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.hits.append((request.method, request.path))
            response: web.StreamResponse = await handler(request)
            return response

        self.app = web.Application(middlewares=[record])
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.host = "127.0.0.1"

    async def start(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Self:
        self.runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0, ssl_context=tls)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        self.host = host
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


# ------------------------------------------------------------------------------- OpenAI-compatible


class ChatServer(HttpServer):
    """POST /<mode>/v1/chat/completions with mode: ok, fail (500), limited (429 + Retry-After), busy
    (503 + Retry-After), cut (a stream whose connection drops after `cut_after` chunks),
    slow (answers after `slow_s`), garbage (JSON output that breaks the schema). A request with
    `"stream": true` is answered as OpenAI streams (server-sent chunks of `token_chars` characters,
    usage in a last chunk when asked); with `hold_after` set, a stream stops after that many chunks
    until `release` is set (POST /release sets it), so a test sees partial output deterministically
    (hold_after=0 holds whole answers too); with `hold_before_done`, a stream holds after its usage
    chunk, before `[DONE]`, until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[str, Any] = {}  # structured replies by json_schema name
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.retry_after = "7"
        self.slow_s = 5.0
        self.token_chars = 8
        self.hold_after: int | None = None
        self.cut_after = 2
        self.hold_before_done = False
        self.held_before_done = 0  # streams that reached that hold
        self.release = asyncio.Event()
        self.usage: Any = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}  # as sent
        self.app.router.add_post("/{mode}/v1/chat/completions", self.completions)
        self.app.router.add_post("/release", self._release)

    async def _release(self, request: web.Request) -> web.Response:
        self.release.set()
        return web.Response(text="released")

    async def _stream(
        self, request: web.Request, body: dict[str, Any], content: str, *, cut: bool = False
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{len(self.calls)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body["model"]}

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await response.write(b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n")

        pieces = [content[i : i + self.token_chars] for i in range(0, len(content), self.token_chars)]
        for n, piece in enumerate(pieces):
            if self.hold_after is not None and n == self.hold_after:
                await self.release.wait()
            if cut and n == self.cut_after:  # the connection drops mid-answer: no finish, no usage
                assert request.transport is not None
                request.transport.abort()
                return response
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=self.usage)
        if self.hold_before_done:
            self.held_before_done += 1
            await self.release.wait()
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def base_url(self, mode: str) -> str:
        return f"{self.url}/{mode}/v1"

    def count(self, mode: str) -> int:
        return sum(1 for m, _ in self.calls if m == mode)

    async def completions(self, request: web.Request) -> web.Response:
        mode = request.match_info["mode"]
        body = await request.json()
        self.calls.append((mode, body))
        if request.headers.get("Authorization") != "Bearer test-key":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        if mode == "fail":
            return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
        if mode == "busy":  # 503, with Retry-After unless `retry_after` is empty
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503,
                                     headers=headers)
        if mode == "limited":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": self.retry_after},
            )
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            name = fmt["json_schema"]["name"]
            content = '{"unexpected": true}' if mode == "garbage" else json.dumps(self.replies[name])
        else:
            content = "echo: " + body["messages"][-1]["content"]
        if body.get("stream"):
            return await self._stream(request, body, content, cut=mode == "cut")
        if self.hold_after == 0:  # a whole answer is held until `release` too
            await self.release.wait()
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": self.usage,
            }
        )


# ------------------------------------------------------------------------------- webhook receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


def signed_by(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether the Standard Webhooks headers carry a valid, recent signature of `body` by `secret`."""
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):
        return False
    return True


class Receiver(HttpServer):
    """Records requests and answers from a per-path plan. With a `secret`, POSTs must be signed by it
    (401 otherwise) except on `unsigned_paths`; without one it takes everything (an attacker's receiver)."""

    def __init__(self, secret: str | None) -> None:
        super().__init__()
        self.secret = secret
        self.unsigned_paths: set[str] = set()
        self.received: list[Received] = []
        self.plan: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.app.router.add_post("/{path:.*}", self.post)
        self.app.router.add_get("/{path:.*}", self.get)

    def answer(self, path: str, *responses: tuple[int, dict[str, str], bytes]) -> None:
        self.plan.setdefault(path, []).extend(responses)

    async def post(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = "/" + request.match_info["path"]
        ok = self.secret is not None and signed_by(self.secret, body, dict(request.headers))
        self.received.append(Received(path, dict(request.headers), body, ok))
        if self.secret is not None and not ok and path not in self.unsigned_paths:
            return web.Response(status=401, text="bad signature")
        if path == "/slow":
            await asyncio.sleep(3)
        status, headers, text = self.plan[path].pop(0) if self.plan.get(path) else (200, {}, b"thanks")
        return web.Response(status=status, headers=headers, body=text)

    async def get(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        if self.plan.get(path):
            status, headers, text = self.plan[path].pop(0)
            return web.Response(status=status, headers=headers, body=text)
        if path not in self.files:
            return web.Response(status=404)
        data, ctype = self.files[path]
        if request.query.get("chunked"):
            response = web.StreamResponse(headers={"Content-Type": ctype})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(data), 4096):
                await response.write(data[i : i + 4096])
            await response.write_eof()
            return response
        return web.Response(body=data, content_type=ctype.split(";")[0])


# ------------------------------------------------------------------------------- SMTP


def self_signed(folder: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
    """A certificate for `names` (DNS names or IPs) and its key, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{names[0]}-cert.pem", folder / f"{names[0]}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    content: bytes
    tls: bool
    authenticated: bool


@dataclass
class Inbox:
    """The SMTP server's handler: refuses listed recipients, records every accepted message."""

    messages: list[Mail] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.content,
                session.ssl is not None,
                bool(session.authenticated),
            )
        )
        return "250 Message accepted"


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS required, AUTH required (user `mailer`, password `s3cret`)."""

    USER, PASSWORD = "mailer", "s3cret"

    def __init__(self, folder: Path) -> None:
        self.cert, key = self_signed(folder)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, key)
        self.inbox = Inbox()
        self.logins: list[str] = []
        self.port = free_port()
        self.controller = Controller(
            self.inbox,
            hostname="127.0.0.1",
            port=self.port,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            authenticator=self._authenticate,
        )

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            self.logins.append(auth_data.login.decode())
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.USER
            and auth_data.password.decode() == self.PASSWORD
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
