"""Password redaction: in URLs and conninfo strings, malformed ones included, and
in every value of every log event."""

from __future__ import annotations

import pytest

from soleil.runner.db import describe, redact, resolve_url
from soleil.runner.errors import ConfigurationError
from soleil.runner.logging import _redact_secrets

SECRET = "hunter2-Secret"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://app:{SECRET}@db.internal:5432/app",
        f"postgres://app:{SECRET}@db/app?sslmode=require",
        f"host=db user=app password={SECRET} dbname=app",
        f"host=db password = '{SECRET} with spaces' dbname=app",
        f"host=db PASSWORD='{SECRET}",  # unterminated quote
        f"connection to postgresql://app:{SECRET}@db/app failed: timeout",
    ],
)
def test_passwords_are_redacted_wherever_they_appear(text: str) -> None:
    assert SECRET not in redact(text)
    assert "***" in redact(text)


def test_a_known_url_redacts_its_password_even_when_quoted_elsewhere() -> None:
    url = f"postgresql://app:{SECRET}@db/app"
    assert redact(f'token "{SECRET}" rejected', url) == 'token "***" rejected'


def test_a_malformed_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        resolve_url(f"postgresql://app:{SECRET}%zz@db/app")
    assert SECRET not in str(caught.value)
    assert "invalid database URL" in str(caught.value)


def test_describe_names_the_target_without_the_password() -> None:
    assert describe(f"postgresql://app:{SECRET}@db:6432/app") == "app@db:6432/app"


def test_every_log_value_is_redacted() -> None:
    event = {
        "event": "database.unavailable",
        "error": f"cannot connect to postgresql://app:{SECRET}@db/app",
        "detail": f"password={SECRET}",
        "job_id": 7,
        "queues": ["default"],
    }
    redacted = _redact_secrets(None, "warning", dict(event))
    assert SECRET not in str(redacted)
    assert redacted["job_id"] == 7 and redacted["queues"] == ["default"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cr/et99@127.0.0.1/app",
        "postgresql://app:p@ss:w0rd@127.0.0.1/app",
        "postgresql://app:2024/secret@db/app",  # a "port" of digits, then the rest
        "postgresql://app:p@s/secret@db/app",
        "postgresql://app:s3cr/et?99-secret@db/app",  # libpq's own error would quote "99-secret@db"
    ],
)
def test_a_password_that_needs_percent_encoding_is_refused_without_any_of_it(url: str) -> None:
    # libpq would take pieces of it for the host, port or database, and print them.
    with pytest.raises(ConfigurationError) as caught:
        resolve_url(url)
    message = str(caught.value)
    assert "percent-encode" in message
    assert not any(piece in message for piece in ("s3cr", "et99", "w0rd", "secret", "2024"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pass@db/app?application_name=a@b",
        "postgresql://db:5432/app?user=a@b",
        "postgresql://app:pass@db1:5432,db2:5433/app",
        "postgresql://app:pass@[::1]:5432/app",
        "postgresql://app:p%40ss%2Fw0rd@db/app",
        "postgresql://app:pa?ss#x@db/app",  # libpq ends the password at '@', not '?' or '#'
        "postgresql://db1:5432,db2/app?user=a@b",
        "postgresql://app:pass@db?application_name=w@h",
        "postgresql://app:pass@db?sslrootcert=/home/me@corp/ca.pem",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/app",
        "host=db password=a@b/c dbname=app",
    ],
)
def test_urls_with_an_at_sign_elsewhere_or_an_encoded_password_are_accepted(url: str) -> None:
    assert resolve_url(url) == url
