"""How long a failed attempt waits before the next one. Pure functions."""

from __future__ import annotations

import random
from collections.abc import Sequence

# A job's or worker's backoff: seconds, a list indexed by attempt (the last value
# repeats, as in Laravel), or "exponential" (doubling from 1 s, with jitter).
BackoffSpec = float | int | Sequence[float | int] | str

EXPONENTIAL = "exponential"
EXPONENTIAL_CAP_SECONDS = 3600.0


def validate(spec: object) -> BackoffSpec:
    """The spec itself, or ValueError naming what is wrong."""
    if isinstance(spec, bool):
        raise ValueError(f"backoff must be seconds, a list of seconds or 'exponential', not {spec!r}")
    if isinstance(spec, int | float):
        if spec < 0:
            raise ValueError(f"backoff must not be negative, got {spec}")
        return spec
    if isinstance(spec, str):
        if spec != EXPONENTIAL:
            raise ValueError(f"backoff must be seconds, a list of seconds or 'exponential', not {spec!r}")
        return spec
    if isinstance(spec, Sequence) and spec:
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int | float) or item < 0:
                raise ValueError(f"backoff list items must be seconds >= 0, got {item!r}")
        return list(spec)
    raise ValueError(f"backoff must be seconds, a list of seconds or 'exponential', not {spec!r}")


def parse(text: str) -> BackoffSpec:
    """The CLI form: `10`, `1,5,10` or `exponential`."""
    text = text.strip()
    if text == EXPONENTIAL:
        return text
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(
            f"invalid backoff {text!r}: use seconds, a comma-separated list or 'exponential'"
        ) from None
    return validate(values[0] if len(values) == 1 else values)


def delay_seconds(spec: BackoffSpec, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    if isinstance(spec, str):
        base = min(EXPONENTIAL_CAP_SECONDS, 2.0 ** (attempt - 1))
        # Up to 25 % jitter, so jobs that failed together do not retry together.
        return base * (1.0 + (rng or random).random() * 0.25)
    if isinstance(spec, int | float):
        return float(spec)
    index = min(max(attempt, 1), len(spec)) - 1
    return float(spec[index])
