"""How the agent spaces its requests so that a fleet never becomes the collector's incident
(DESIGN.md, outage lessons 1 and 3): pure functions of a random source and a clock.

- **Full jitter** after a failure: wait ``U(0, min(cap, base * 2**failures))`` (Brooker, "Exponential
  Backoff And Jitter", AWS Architecture Blog, 2015: of the schemes compared it spreads retries
  best and finishes the work with the fewest calls).
- **Retry-After** is a floor, never shortened: wait ``Retry-After + U(0, that same full-jitter
  window)``, so agents told the same number do not come back in the same second.
- **First contact** after start-up: ``U(0, window)``, so a fleet restarted at once (a deploy, a
  power event) arrives spread over the window.
- **Rate cap**: a token bucket of ``rate`` requests per second with ``burst`` tokens.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "TokenBucket",
    "first_contact_delay",
    "full_jitter",
    "parse_retry_after",
    "retry_delay",
]


def full_jitter(failures: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0 for the first retry window)."""
    window = min(cap_s, base_s * 2.0 ** min(failures, 60))
    return rng.uniform(0.0, window)


def retry_delay(
    failures: int,
    base_s: float,
    cap_s: float,
    rng: random.Random,
    retry_after_s: float | None = None,
) -> float:
    """The wait before retrying: full jitter, or at least ``retry_after_s`` when the server
    said so (plus jitter on top, to spread agents that were told the same number)."""
    jitter = full_jitter(failures, base_s, cap_s, rng)
    if retry_after_s is None:
        return jitter
    return retry_after_s + jitter


def first_contact_delay(window_s: float, rng: random.Random) -> float:
    return rng.uniform(0.0, window_s) if window_s > 0 else 0.0


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """``Retry-After`` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) in seconds from now;
    None when absent or malformed. Capped at a day: a server cannot park an agent forever."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), 86400.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now_wall), 86400.0)


@dataclass(slots=True)
class TokenBucket:
    """At most ``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: int
    clock: Callable[[], float]
    tokens: float = -1.0
    stamp: float = 0.0

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)
        self.stamp = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self) -> float:
        """Seconds until a request is allowed (0 if one is allowed now)."""
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self._refill()
        self.tokens -= 1.0
