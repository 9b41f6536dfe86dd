"""A local SMTP server (aiosmtpd) that keeps every message it accepts."""

from __future__ import annotations

import asyncio
import email
import email.policy

from aiosmtpd.controller import Controller

from wrtci.services.stack.servers import free_port


class Mailbox:
    """aiosmtpd handler: every message accepted, parsed and kept."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[list[str]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(list(envelope.rcpt_tos))
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.mailbox = Mailbox()
        self.controller: Controller | None = None

    async def start(self) -> SmtpServer:
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        await asyncio.to_thread(self.controller.start)
        return self

    async def stop(self) -> None:
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
            self.controller = None
