"""Email through a real SMTP server (aiosmtpd) that requires STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor, JobFailedError, RateLimited, Retry, Unrecoverable
from conveyor.errors import ConfigurationError
from conveyor.handlers import install
from conveyor.handlers.email import EmailRequest, Mailer
from conveyor.handlers.ratelimit import SendRate
from conveyor.settings import Settings
from tests.conftest import running, wait_for
from tests.handlers.servers import SmtpServer


def smtp_settings(smtp: SmtpServer, **extra: object) -> Settings:
    values: dict[str, object] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_username": SmtpServer.USER,
        "smtp_password": SmtpServer.PASSWORD,
        "smtp_ca_file": str(smtp.cert),
        "smtp_timeout_s": 10.0,
        "email_from": "Study App <noreply@study.test>",
        **extra,
    }
    return Settings(**values)  # type: ignore[arg-type]


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_templated_mail_with_attachment_through_a_worker(app: Conveyor, smtp: SmtpServer, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "welcome.subject.txt").write_text("Welcome, {{ name }}!\n")
    (templates / "welcome.txt").write_text("Hi {{ name }}, your course {{ course }} starts Monday.")
    (templates / "welcome.html").write_text("<p>Hi <b>{{ name }}</b>, course {{ course }}.</p>")
    handlers = install(app, email=True, settings=smtp_settings(smtp, email_templates_dir=str(templates)))
    assert handlers.email is not None
    pdf = b"%PDF-1.4 fake but bytes are bytes"
    job = await handlers.email.task.enqueue(
        {
            "to": ["ana@example.com"],
            "bcc": ["audit@example.com"],
            "template": "welcome",
            "context": {"name": "Ana <script>", "course": "Biology"},
            "attachments": [
                {
                    "filename": "syllabus.pdf",
                    "content_base64": base64.b64encode(pdf).decode(),
                    "content_type": "application/pdf",
                }
            ],
        }
    )
    async with running(app.worker("email", lease_ms=5000)):
        result = await job.result(timeout=30)
    assert result.accepted == ["ana@example.com", "audit@example.com"] and result.refused == {}
    [mail] = smtp.inbox.messages
    assert mail.tls and mail.authenticated, "sent after STARTTLS and AUTH"
    assert smtp.logins == [SmtpServer.USER]
    assert mail.recipients == ["ana@example.com", "audit@example.com"]
    msg = parsed(mail.content)
    assert msg["Subject"] == "Welcome, Ana <script>!"
    assert msg["Message-ID"] == result.message_id
    assert "Bcc" not in msg
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and "your course Biology starts Monday" in text.get_content()
    assert html is not None and "<b>Ana &lt;script&gt;</b>" in html.get_content(), "HTML is autoescaped"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "syllabus.pdf" and attachment.get_content() == pdf


async def test_refused_recipient_is_permanent(app: Conveyor, smtp: SmtpServer) -> None:
    smtp.inbox.refuse["nobody@example.com"] = "550 5.1.1 no such user"
    handlers = install(app, email=True, settings=smtp_settings(smtp))
    assert handlers.email is not None
    job = await handlers.email.task.enqueue({"to": ["nobody@example.com"], "subject": "s", "text": "t"})
    async with running(app.worker("email", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="550"):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1
    assert smtp.inbox.messages == []


async def test_temporary_refusal_is_retried_and_partial_refusal_is_reported(smtp: SmtpServer) -> None:
    mailer = Mailer(smtp_settings(smtp))
    smtp.inbox.refuse["busy@example.com"] = "451 4.3.0 try again later"
    with pytest.raises(Retry, match="451"):
        await mailer.send(EmailRequest(to=["busy@example.com"], subject="s", text="t"))
    result = await mailer.send(EmailRequest(to=["busy@example.com", "ok@example.com"], subject="s", html="<p>x</p>"))
    assert result.accepted == ["ok@example.com"]
    assert result.refused["busy@example.com"].startswith("451")


async def test_wrong_password_is_permanent(smtp: SmtpServer) -> None:
    with pytest.raises(Unrecoverable, match="535"):
        await Mailer(smtp_settings(smtp, smtp_password="wrong")).send(
            EmailRequest(to=["a@example.com"], subject="s", text="t")
        )


async def test_an_untrusted_certificate_is_not_accepted(smtp: SmtpServer) -> None:
    with pytest.raises(Retry, match=r"(?i)certificate"):
        await Mailer(smtp_settings(smtp, smtp_ca_file=None)).send(
            EmailRequest(to=["a@example.com"], subject="s", text="t")
        )
    assert smtp.inbox.messages == []


async def test_no_server_configured_is_unrecoverable() -> None:
    with pytest.raises(Unrecoverable, match="CONVEYOR_SMTP_HOST"):
        await Mailer(Settings()).send(EmailRequest(to=["a@example.com"], subject="s", text="t"))


def test_bad_messages_are_rejected() -> None:
    with pytest.raises(ValueError, match="not an email address"):
        EmailRequest(to=["a@example.com\r\nBcc: x@evil.test"], subject="s", text="t")
    with pytest.raises(ValueError, match="give text"):
        EmailRequest(to=["a@example.com"], subject="s")
    with pytest.raises(ValueError, match="pattern"):
        EmailRequest(to=["a@example.com"], template="../etc/passwd")


async def test_send_rate_is_shared_per_queue(app: Conveyor) -> None:
    first = SendRate(lambda: app.client, prefix=app.prefix, queue="email", per_window=2, window_s=60)
    second = SendRate(lambda: app.client, prefix=app.prefix, queue="email", per_window=2, window_s=60)
    await first.take()
    await second.take()
    with pytest.raises(RateLimited) as info:
        await first.take()
    assert 50 < info.value.retry_after <= 60
    other_queue = SendRate(lambda: app.client, prefix=app.prefix, queue="email-b", per_window=2, window_s=60)
    await other_queue.take()


def smtp_peer(greeting: bytes, answer: Callable[[bytes], bytes]) -> Callable[..., Awaitable[None]]:
    """A raw SMTP peer: `greeting`, then `answer(command line)` for each command."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(greeting)
            while line := await reader.readline():
                writer.write(answer(line))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return talk


def ok_until(command: bytes, reply: bytes) -> Callable[[bytes], bytes]:
    return lambda line: reply if line.upper().startswith(command) else b"250 ok\r\n"


@pytest.mark.parametrize(
    ("greeting", "answer", "reason"),
    [
        (b"220 " + b"x" * 40_000 + b"\r\n", ok_until(b"", b""), "-1: Response too long"),
        (b"hello there\r\n", ok_until(b"", b""), "Malformed SMTP response line: hello there"),
        (b"220 ready\r\n", ok_until(b"MAIL", b"999 what\r\n"), "999: what"),
        (b"220 ready\r\n", ok_until(b"DATA", b"250 not now\r\n"), "250: not now"),
    ],
    ids=["overlong", "garbled", "unknown-code", "out-of-turn"],
)
async def test_a_garbled_or_out_of_turn_answer_is_retried_not_permanent(
    greeting: bytes, answer: Callable[[bytes], bytes], reason: str
) -> None:
    """Only a 5xx is permanent; before, aiosmtplib's code -1 (a response it could not parse), a code
    outside SMTP's and an answer out of turn failed the mail at once."""
    server = await asyncio.start_server(smtp_peer(greeting, answer), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        mailer = Mailer(
            Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, email_from="a@example.com")
        )
        with pytest.raises(Retry) as info:
            await mailer.send(EmailRequest(to=["b@example.com"], subject="Hi", text="Hello"))
        assert reason in str(info.value.reason)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_5xx_from_the_same_raw_peer_stays_permanent() -> None:
    talk = smtp_peer(b"220 ready\r\n", ok_until(b"MAIL", b"554 go away\r\n"))
    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        mailer = Mailer(
            Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, email_from="a@example.com")
        )
        with pytest.raises(Unrecoverable, match="554: go away"):
            await mailer.send(EmailRequest(to=["b@example.com"], subject="Hi", text="Hello"))
    finally:
        server.close()
        await server.wait_closed()


TRICKLE_S = 0.2  # the trickling peer's pause between two bytes of an answer


class TricklingSmtp:
    """A raw SMTP peer that answers every command correctly, a byte every TRICKLE_S: each answer
    arrives well inside the per-answer timeout, the whole conversation takes about 10 s."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []
        self.closed = 0

    async def _answer(self, writer: asyncio.StreamWriter, reply: bytes) -> None:
        for b in reply:
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_S)

    async def talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._answer(writer, b"220 slow\r\n")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper()
                self.commands.append(verb)
                if verb == b"DATA":
                    await self._answer(writer, b"354 go on\r\n")
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    self.commands.append(b"<end of data>")
                await self._answer(writer, b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


async def test_a_server_that_trickles_its_answers_is_cut_off_by_the_delivery_budget() -> None:
    """Each answer inside smtp_timeout_s, the conversation over smtp_budget_s: the delivery ends at the
    budget as a Retry and the connection is closed; before, only the job's timeout ended it."""
    peer = TricklingSmtp()
    server = await asyncio.start_server(peer.talk, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        settings = Settings(
            smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, email_from="a@example.com",
            smtp_timeout_s=60.0, smtp_budget_s=1.0,
        )
        with pytest.raises(Retry, match=r"SMTP delivery took over its budget of 1.0s"):
            await Mailer(settings).send(EmailRequest(to=["b@example.com"], subject="Hi", text="Hello"))
        assert b"<end of data>" not in peer.commands  # the mail was not accepted
        await wait_for(lambda: peer.closed == 1, timeout=30, what="the SMTP connection closed")
    finally:
        server.close()
        await server.wait_closed()


def test_the_delivery_budget_is_checked() -> None:
    for bad in (0.0, -1.0, 3601.0):
        with pytest.raises(ConfigurationError, match="CONVEYOR_SMTP_BUDGET_S"):
            Mailer(Settings(smtp_host="127.0.0.1", smtp_budget_s=bad))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"To": "x@example.com"}, "is set by the mailer"),
        ({"subject": "again"}, "is set by the mailer"),
        ({"Message-ID": "<x@example.com>"}, "is set by the mailer"),
        ({"Bcc": "x@example.com"}, "is set by the mailer"),
        ({"Content-Type": "text/html"}, "is set by the mailer"),
        ({"X:Y": "v"}, "not a valid field name"),
        ({"Bad Name": "v"}, "not a valid field name"),
        ({"": "v"}, "not a valid field name"),
        ({"X-Tag": "a\x00b"}, "control character"),
        ({"X-Tag": "a" * 5000}, "control character, or is over 4096"),
    ],
    ids=["to", "subject", "message-id", "bcc", "content-type", "colon", "space", "empty", "nul", "long"],
)
def test_headers_the_message_cannot_carry_are_refused_when_the_job_is_made(
    headers: dict[str, str], reason: str
) -> None:
    """Before, a second To, Subject or Message-ID made the message unbuildable on every attempt (a
    ValueError retried five times), and a name with ':' or a space, or a NUL, went into the message."""
    with pytest.raises(ValueError, match=reason):
        EmailRequest(to=["a@example.com"], subject="s", text="t", headers=headers)


def test_cc_and_reply_to_headers_only_when_the_request_does_not_set_them() -> None:
    base: dict[str, Any] = {"to": ["a@example.com"], "subject": "s", "text": "t"}
    with pytest.raises(ValueError, match="from the request's 'reply_to'"):
        EmailRequest(**base, reply_to="r@example.com", headers={"Reply-To": "x@e.com"})
    with pytest.raises(ValueError, match="from the request's 'cc'"):
        EmailRequest(**base, cc=["c@example.com"], headers={"CC": "x@e.com"})
    req = EmailRequest(**base, headers={"Reply-To": "x@example.com", "X-Tag": "a\tb"})
    msg = Mailer(Settings(smtp_host="127.0.0.1", email_from="f@example.com")).build(req)
    assert msg["Reply-To"] == "x@example.com" and msg["X-Tag"] == "a\tb"


async def test_a_custom_header_arrives(smtp: SmtpServer) -> None:
    mailer = Mailer(smtp_settings(smtp))
    await mailer.send(EmailRequest(to=["b@example.com"], subject="Hi", text="Hello", headers={"X-Course": "bio-101"}))
    [mail] = smtp.inbox.messages  # the server answered the data only once it had recorded the message
    assert parsed(mail.content)["X-Course"] == "bio-101"


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: victim@evil.test"},
        {"subject": "Hi\nX-Injected: 1"},
        {"subject": "Hi\rX-Injected: 1"},
        {"subject": "Hi\u2028Bcc: victim@evil.test"},
        {"subject": "Hi\x85there"},
        {"subject": "Hi\x0bthere"},
        {"subject": "Hi\x00there"},
        {"sender": "Ana\u2028Bcc: victim@evil.test <ana@example.com>"},
        {"reply_to": "Ana\x0b <ana@example.com>"},
        {"to": ["Ana\x85 <ana@example.com>"]},
        {"headers": {"X-Tag": "a\u2028Bcc: victim@evil.test"}},
    ],
    ids=[
        "crlf", "lf", "cr", "line-separator", "next-line", "vertical-tab", "nul", "sender", "reply-to", "to", "header"
    ],
)
def test_a_line_break_or_control_character_in_a_header_is_refused_when_the_job_is_made(
    fields: dict[str, Any],
) -> None:
    """Before, the subject was not checked at all and addresses only for CR and LF: the mailer then
    refused the line break while building the message, a ValueError retried on each of the five
    attempts (and a NUL went out in the Subject line)."""
    request: dict[str, Any] = {"to": ["a@example.com"], "subject": "s", "text": "t", **fields}
    with pytest.raises(ValueError, match=r"line break or another control character|not an email address"):
        EmailRequest(**request)


async def test_a_template_subject_broken_by_its_context_fails_at_once_and_sends_nothing(
    app: Conveyor, smtp: SmtpServer, tmp_path: Path
) -> None:
    """The subject a template renders from job data is checked as one given directly: the job fails
    on its first attempt, naming the cause. Before, building the message raised a ValueError on each
    of five attempts."""
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "hello.subject.txt").write_text("Hello {{ name }}\n")
    (templates / "hello.txt").write_text("Hi {{ name }}")
    handlers = install(app, email=True, settings=smtp_settings(smtp, email_templates_dir=str(templates)))
    assert handlers.email is not None
    job = await handlers.email.task.enqueue(
        {"to": ["ana@example.com"], "template": "hello", "context": {"name": "Ana\r\nBcc: victim@evil.test"}}
    )
    async with running(app.worker("email", lease_ms=5000)):
        with pytest.raises(JobFailedError, match="subject rendered from template 'hello' contains a line break"):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1
    assert smtp.inbox.messages == []
