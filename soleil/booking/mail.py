"""Mail to guests, sent by jobs on the `mail` queue through SMTP.

Settings come from the environment of the process that runs the job:
SOLEIL_SMTP_HOST, SOLEIL_SMTP_PORT (25), SOLEIL_SMTP_USER, SOLEIL_SMTP_PASSWORD,
SOLEIL_SMTP_FROM (bookings@localhost) and SOLEIL_SMTP_STARTTLS (0/1). With no
host set, mail is written to the log instead (Laravel's `log` mailer), so an
unconfigured development machine does not fail jobs.
"""

from __future__ import annotations

import os
import smtplib
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage

import structlog

from soleil.runner import ConfigurationError, Job, JobContext

log = structlog.get_logger("soleil.booking.mail")

SMTP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None
    from_address: str = "bookings@localhost"
    starttls: bool = False

    @classmethod
    def from_env(cls) -> SmtpSettings | None:
        host = os.environ.get("SOLEIL_SMTP_HOST")
        if not host:
            return None
        port = os.environ.get("SOLEIL_SMTP_PORT", "25")
        if not port.isdigit():
            raise ConfigurationError(f"SOLEIL_SMTP_PORT must be a port number, got {port!r}")
        return cls(
            host=host,
            port=int(port),
            user=os.environ.get("SOLEIL_SMTP_USER") or None,
            password=os.environ.get("SOLEIL_SMTP_PASSWORD") or None,
            from_address=os.environ.get("SOLEIL_SMTP_FROM") or "bookings@localhost",
            starttls=os.environ.get("SOLEIL_SMTP_STARTTLS", "0") in ("1", "true", "yes"),
        )


def send(settings: SmtpSettings, message: EmailMessage) -> None:
    message["From"] = settings.from_address
    with smtplib.SMTP(settings.host, settings.port, timeout=SMTP_TIMEOUT_SECONDS) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(message)


class BookingFailedNotification(Job):
    """Tells the guest that a queued booking request could not be made."""

    name = "booking.failed_notification"
    queue = "mail"
    tries = 3
    backoff = [1, 5]
    timeout = 30

    guest_name: str
    guest_email: str
    room_id: int
    check_in: date
    check_out: date
    request_id: str
    reason: str

    def message(self) -> EmailMessage:
        message = EmailMessage()
        message["To"] = self.guest_email
        message["Subject"] = f"Your booking of room {self.room_id} could not be made"
        message["X-Soleil-Request-Id"] = self.request_id
        message.set_content(
            f"Dear {self.guest_name},\n\n"
            f"we could not book room {self.room_id} from {self.check_in} to {self.check_out}: "
            f"{self.reason}.\nNo payment has been taken. Please choose other dates or another room.\n"
        )
        return message

    def handle(self, ctx: JobContext) -> None:
        settings = SmtpSettings.from_env()
        message = self.message()
        if settings is None:
            ctx.log.warning(
                "mail.logged", to=self.guest_email, subject=message["Subject"], note="no SMTP host"
            )
            return
        send(settings, message)
        ctx.log.info("mail.sent", to=self.guest_email, request_id=self.request_id, smtp=settings.host)
