"""Reports by mail: who gets one, the message, and SMTP (stdlib, in a thread).

``smtplib`` is synchronous: one send runs in ``asyncio.to_thread`` with the
socket timeout from the config, so a dead server costs at most that long.
SMTP errors are sorted into temporary (connection trouble, 4xx replies: try
again later) and permanent (5xx replies, refused login: trying again would
not help).
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from wrtci.services.notifier.config import MailSection, Tls
from wrtci.services.notifier.delivery import PermanentFailure, TemporaryFailure
from wrtci.services.notifier.facts import FirmwareFacts


def recipients(facts: FirmwareFacts, section: MailSection) -> list[str]:
    """Every rule that matches the firmware, plus its submitter; sorted, no duplicates."""
    found: set[str] = set()
    for rule in section.rules:
        if rule.source_kinds and facts.source_kind not in rule.source_kinds:
            continue
        if rule.channels and facts.channel not in rule.channels:
            continue
        found.update(rule.to)
    if section.mail_submitter and facts.submitter:
        address = section.submitter_addresses.get(facts.submitter)
        if address is None and "@" in facts.submitter:
            address = facts.submitter
        if address:
            found.add(address)
    return sorted(found)


def message_id(firmware_id: str, round_: int, sender: str) -> str:
    """The same for a resend of the same report, so mail clients can thread or drop it."""
    digest = hashlib.sha256(f"{firmware_id}\0{round_}".encode()).hexdigest()[:24]
    domain = sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else "wrtci.localhost"
    return f"<wrtci.{digest}.r{round_}@{domain}>"


def build_message(section: MailSection, to: list[str], subject: str, body: str,
                  msg_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = section.from_address
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = msg_id
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def _send_blocking(section: MailSection, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    client_type = smtplib.SMTP_SSL if section.tls is Tls.SSL else smtplib.SMTP
    kwargs = {"context": context} if section.tls is Tls.SSL else {}
    with client_type(section.host, section.port, timeout=section.timeout_s, **kwargs) as smtp:
        if section.tls is Tls.STARTTLS:
            smtp.starttls(context=context)
        if section.user:
            smtp.login(section.user, section.password or "")
        smtp.send_message(message)


async def send(section: MailSection, message: EmailMessage) -> None:
    try:
        await asyncio.to_thread(_send_blocking, section, message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        if all(400 <= code < 500 for code in codes):
            raise TemporaryFailure(f"recipients refused for now: {exc.recipients}") from exc
        raise PermanentFailure(f"recipients refused: {exc.recipients}") from exc
    except smtplib.SMTPAuthenticationError as exc:
        raise PermanentFailure(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
    except smtplib.SMTPResponseException as exc:
        text = f"SMTP {exc.smtp_code} {exc.smtp_error!r}"
        if 400 <= exc.smtp_code < 500:
            raise TemporaryFailure(text) from exc
        raise PermanentFailure(text) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentFailure(f"SMTP server lacks a needed extension: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        # connection refused / reset, timeout, server gone: it may be back later
        raise TemporaryFailure(f"SMTP {section.host}:{section.port}: {exc!r}") from exc
