"""Email over SMTP (aiosmtplib): STARTTLS and AUTH, plain and HTML bodies, attachments, Jinja2 templates.

Permanent SMTP answers (5xx) fail the job at once; temporary ones (4xx), garbled or out-of-turn
answers, timeouts and dropped connections are retried, and so is a conversation that takes over its
budget (`smtp_budget_s`: a server answering each command just inside `smtp_timeout_s`). A per-queue,
fleet-wide send rate keeps a provider's quota.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import re
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosmtplib
import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from conveyor.errors import ConfigurationError, Retry, Unrecoverable
from conveyor.handlers.ratelimit import SendRate
from conveyor.worker.context import JobContext

if TYPE_CHECKING:
    from conveyor.app import Conveyor, Task
    from conveyor.settings import Settings

QUEUE = "email"
TASK = "email.send"
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
MAX_BUDGET_S = 3600.0
_TEMPLATE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_/-]{0,99}$"
# What no header line may hold: ASCII and C1 control characters but the tab, and the Unicode line and
# paragraph separators. Python's mailer refuses each of them as a line break (or, a NUL, writes it as
# it is), so a value holding one is refused when the job is made, not on each attempt to send it.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_MESSAGE = "a line break or another control character"


def _address(value: str) -> str:
    _, addr = email.utils.parseaddr(value)
    if not addr or "@" not in addr or _CONTROL.search(value) or len(value) > 320:
        raise ValueError(f"not an email address: {value[:100]!r}")
    return value


def _check_subject(subject: str) -> str:
    if _CONTROL.search(subject):
        raise ValueError(f"the subject contains {_CONTROL_MESSAGE}")
    return subject


class Attachment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\\r\n]+$")
    content_base64: str
    content_type: str = Field(default="application/octet-stream", pattern=r"^[\w.+-]+/[\w.+-]+$")

    def content(self) -> bytes:
        try:
            return base64.b64decode(self.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"attachment {self.filename!r} is not valid base64") from None


class EmailRequest(BaseModel):
    """Either `template` (files `<name>.subject.txt`, `<name>.txt`, `<name>.html`) or subject + bodies."""

    model_config = ConfigDict(extra="forbid")
    to: list[str] = Field(min_length=1, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    sender: str | None = None
    reply_to: str | None = None
    subject: str | None = Field(default=None, max_length=998)
    text: str | None = Field(default=None, max_length=2_000_000)
    html: str | None = Field(default=None, max_length=2_000_000)
    template: str | None = Field(default=None, pattern=_TEMPLATE_NAME)
    context: dict[str, Any] = Field(default_factory=dict)
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_address(v) for v in values]

    @field_validator("sender", "reply_to")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str | None) -> str | None:
        return None if value is None else _check_subject(value)

    @model_validator(mode="after")
    def _body(self) -> EmailRequest:
        if self.template is None and not (self.text or self.html):
            raise ValueError("give text and/or html, or a template")
        if self.template is None and not self.subject:
            raise ValueError("a subject is required unless a template provides it")
        total = sum(len(a.content_base64) * 3 // 4 for a in self.attachments)
        if total > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"attachments total {total} bytes, over the limit of {MAX_ATTACHMENT_BYTES}")
        for name, v in self.headers.items():
            _check_header(name, v, self)
        return self


# RFC 5322: a field name is printable ASCII without ':' (no space, no control character).
_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")
MAX_HEADER_CHARS = 4096
# Headers the mailer writes itself (a second one made the message unbuildable, and the job failed
# on every attempt) or that belong to the body's MIME structure; Bcc is never a header.
_OWNED = frozenset({"from", "to", "subject", "date", "message-id", "mime-version", "bcc"})


def _check_header(name: str, value: str, req: EmailRequest) -> None:
    lowered = name.lower()
    if not _FIELD_NAME.match(name):
        raise ValueError(f"header name {name[:100]!r} is not a valid field name (printable ASCII, no ':' or space)")
    if _CONTROL.search(value) or len(value) > MAX_HEADER_CHARS:
        raise ValueError(
            f"header {name!r} contains {_CONTROL_MESSAGE}, or is over {MAX_HEADER_CHARS} characters"
        )
    if lowered in _OWNED or lowered.startswith("content-"):
        raise ValueError(f"header {name!r} is set by the mailer (use the request's fields)")
    if (lowered == "cc" and req.cc) or (lowered == "reply-to" and req.reply_to):
        raise ValueError(f"header {name!r} is set from the request's {lowered.replace('-', '_')!r}")


class EmailResult(BaseModel):
    message_id: str
    accepted: list[str]
    refused: dict[str, str]
    response: str


class Templates:
    """Sandboxed Jinja2 templates from a folder; HTML templates are autoescaped."""

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(folder) if folder else None,
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )

    def render(self, name: str, context: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
        """(subject, text, html) from `<name>.subject.txt`, `<name>.txt`, `<name>.html`."""
        if not self.folder:
            raise Unrecoverable("email templates need CONVEYOR_EMAIL_TEMPLATES_DIR")
        out: list[str | None] = []
        for suffix in (".subject.txt", ".txt", ".html"):
            path = Path(self.folder) / f"{name}{suffix}"
            if not path.is_file():
                out.append(None)
                continue
            try:
                out.append(self.env.get_template(f"{name}{suffix}").render(**context))
            except jinja2.TemplateError as exc:
                raise Unrecoverable(f"email template {name}{suffix}: {exc}") from None
        subject, text, html = out
        if text is None and html is None:
            raise Unrecoverable(f"email template {name!r} has neither {name}.txt nor {name}.html")
        return (subject.strip() if subject else None), text, html


class Mailer:
    """Builds the MIME message and sends it through the configured SMTP server."""

    def __init__(self, settings: Settings) -> None:
        if not 0 < settings.smtp_budget_s <= MAX_BUDGET_S:
            raise ConfigurationError(f"CONVEYOR_SMTP_BUDGET_S must be in (0, {MAX_BUDGET_S:g}] seconds")
        self.host = settings.smtp_host
        self.budget_s = settings.smtp_budget_s
        self.settings = settings
        self.templates = Templates(settings.email_templates_dir)

    def build(self, req: EmailRequest) -> EmailMessage:
        subject, text, html = req.subject, req.text, req.html
        if req.template:
            t_subject, t_text, t_html = self.templates.render(req.template, req.context)
            subject, text, html = subject or t_subject, text or t_text, html or t_html
        sender = req.sender or self.settings.email_from
        if not sender:
            raise Unrecoverable("no sender: set CONVEYOR_EMAIL_FROM or give `sender`")
        if not subject:
            raise Unrecoverable("the email has no subject (template without <name>.subject.txt?)")
        if _CONTROL.search(subject):  # rendered from job data: a given subject was checked already
            raise Unrecoverable(f"the subject rendered from template {req.template!r} contains {_CONTROL_MESSAGE}")
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(req.to)
        if req.cc:
            msg["Cc"] = ", ".join(req.cc)
        if req.reply_to:
            msg["Reply-To"] = req.reply_to
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = email.utils.make_msgid(domain=sender.rsplit("@", 1)[-1].strip("> "))
        for name, value in req.headers.items():
            msg[name] = value
        msg.set_content(text or "This message has an HTML part only.")
        if html:
            msg.add_alternative(html, subtype="html")
        for att in req.attachments:
            try:
                data = att.content()
            except ValueError as exc:
                raise Unrecoverable(str(exc)) from None
            maintype, subtype = att.content_type.split("/", 1)
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)
        return msg

    def _tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.smtp_ca_file or None)

    async def send(self, req: EmailRequest) -> EmailResult:
        if not self.host:
            raise Unrecoverable("no SMTP server configured: set CONVEYOR_SMTP_HOST")
        msg = self.build(req)
        recipients = [*req.to, *req.cc, *req.bcc]
        try:
            errors, response = await self._deliver(msg, recipients)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)[:500]
            raise _classify(min(codes) if codes else 500, f"every recipient was refused: {detail}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc.code, f"SMTP server answered {exc.code}: {exc.message}"[:500]) from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise Unrecoverable(f"SMTP server does not support what is configured: {exc}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise Retry(reason=f"SMTP delivery failed: {type(exc).__name__}: {exc}"[:500]) from None
        refused = {addr: f"{r.code} {r.message}" for addr, r in errors.items()}
        accepted = [a for a in recipients if a not in refused]
        return EmailResult(message_id=str(msg["Message-ID"]), accepted=accepted, refused=refused, response=response)


    async def _deliver(
        self, msg: EmailMessage, recipients: list[str]
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """One SMTP conversation within `smtp_budget_s` in all: each answer is bounded by
        `smtp_timeout_s`, and a server answering every command just inside it is cut off here (a
        `Retry`) instead of holding the job for its whole timeout. QUIT, after the message is
        accepted, gets what is left of the budget and may fail: the mail is sent."""
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password,
            use_tls=s.smtp_tls,
            start_tls=bool(s.smtp_starttls and not s.smtp_tls),
            tls_context=self._tls_context() if (s.smtp_tls or s.smtp_starttls) else None,
            timeout=s.smtp_timeout_s,
        )
        budget = asyncio.timeout(self.budget_s)
        try:
            try:
                async with budget:
                    await client.connect()
                    errors, response = await client.send_message(msg, recipients=recipients)
            except TimeoutError:
                if not budget.expired():
                    raise  # one answer over smtp_timeout_s: aiosmtplib's own timeout
                raise Retry(
                    reason=f"SMTP delivery took over its budget of {self.budget_s}s (CONVEYOR_SMTP_BUDGET_S)"
                ) from None
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                async with asyncio.timeout(max(0.0, (budget.when() or 0.0) - asyncio.get_running_loop().time())):
                    await client.quit()
            return errors, response
        finally:
            client.close()


def _classify(code: int, message: str) -> Exception:
    """Only a 5xx is the server's permanent answer. Anything else where a success was due (a 4xx, an
    answer out of turn, a code outside SMTP's, a response aiosmtplib could not parse: code -1) is a
    conversation that went wrong this time, retried like a dropped connection."""
    if 500 <= code < 600:
        return Unrecoverable(message)
    return Retry(reason=message)


class EmailTasks:
    def __init__(self, task: Task[EmailResult], mailer: Mailer) -> None:
        self.task = task
        self.mailer = mailer


def register(app: Conveyor, settings: Settings) -> EmailTasks:
    """Declare `email.send` on queue `email` (5 attempts); the send rate comes from settings."""
    mailer = Mailer(settings)
    rate = SendRate(lambda: app.client, prefix=app.prefix, queue=QUEUE, per_window=settings.email_rate_per_minute)

    async def send(ctx: JobContext, payload: EmailRequest) -> EmailResult:
        await rate.take()
        return await mailer.send(payload)

    # The job's timeout leaves the delivery its whole budget, so a slow server ends as the clear Retry.
    timeout = max(60.0, settings.smtp_timeout_s * 3, settings.smtp_budget_s + 30)
    task = app.task(send, queue=QUEUE, name=TASK, attempts=5, timeout=timeout)
    return EmailTasks(task, mailer)
