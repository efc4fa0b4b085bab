"""Booking pieces that need no database: request validation, SMTP settings,
the SQL files, and the one-way dependency between runner and booking."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import pytest

from soleil.booking import BookingRequest, SmtpSettings, ValidationFailed
from soleil.booking import sql as booking_sql
from soleil.runner import ConfigurationError, queries

TODAY = date(2030, 5, 10)


def valid(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "room_id": 1,
        "user_id": 2,
        "check_in": "2030-05-10",
        "check_out": "2030-05-12",
        "guest_name": " Ada ",
        "guest_email": "ada@example.com",
    }
    return {**data, **overrides}


def test_a_valid_request_gets_an_idempotency_key_when_it_has_none() -> None:
    request = BookingRequest.parse(valid(), TODAY)
    assert request.guest_name == "Ada"
    assert request.check_out - request.check_in == timedelta(days=2)
    assert request.request_id and request.request_id != BookingRequest.parse(valid(), TODAY).request_id


def test_every_invalid_field_is_named() -> None:
    with pytest.raises(ValidationFailed) as caught:
        BookingRequest.parse(valid(room_id=0, guest_email="ada@"), TODAY)
    assert set(caught.value.errors) == {"room_id", "guest_email"}
    with pytest.raises(ValidationFailed) as caught:
        BookingRequest.parse(valid(check_out="2030-05-10"), TODAY)
    assert caught.value.errors == {"check_out": ["check_out must be after check_in"]}
    with pytest.raises(ValidationFailed, match="must not be in the past"):
        BookingRequest.parse(valid(check_in="2030-05-09"), TODAY)


def test_smtp_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOLEIL_SMTP_HOST", raising=False)
    assert SmtpSettings.from_env() is None  # the log mailer
    monkeypatch.setenv("SOLEIL_SMTP_HOST", "mail.example.com")
    monkeypatch.setenv("SOLEIL_SMTP_PORT", "587")
    monkeypatch.setenv("SOLEIL_SMTP_USER", "hostel")
    monkeypatch.setenv("SOLEIL_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("SOLEIL_SMTP_FROM", "desk@example.com")
    monkeypatch.setenv("SOLEIL_SMTP_STARTTLS", "1")
    assert SmtpSettings.from_env() == SmtpSettings(
        "mail.example.com", 587, "hostel", "s3cret", "desk@example.com", starttls=True
    )
    monkeypatch.setenv("SOLEIL_SMTP_PORT", "smtp")
    with pytest.raises(ConfigurationError, match="SOLEIL_SMTP_PORT"):
        SmtpSettings.from_env()


def test_the_booking_sql_files_load() -> None:
    assert [version for version, _, _ in queries.migrations(booking_sql.booking_sql_dir())] == [1, 2]
    assert "EXCLUDE USING gist" in queries.migrations(booking_sql.booking_sql_dir())[0][2]
    assert "ON CONFLICT (request_id)" in booking_sql.get("booking_insert")
    with pytest.raises(KeyError, match="no SQL statement named"):
        booking_sql.get("nope")


def test_the_runner_and_its_cli_never_import_the_booking_app() -> None:
    code = "import sys, soleil.runner, soleil.runner.cli; sys.exit('soleil.booking' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
