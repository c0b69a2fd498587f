"""Rate limiting of failed authentications per peer host: token buckets, bounded memory.

Each failure (wrong secret, garbage, handshake timeout, foreign uid, failed TLS handshake)
spends a token of the host's bucket of ``AUTH_FAILURE_BURST``, refilled at
``AUTH_FAILURE_REFILL_PER_S``; while a host's bucket is empty the server closes its new
sockets at accept, before any thread or handshake. At most ``AUTH_FAILURE_HOSTS`` hosts are
tracked (the fullest buckets are forgotten first).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: Failed authentications one peer host may burst, and how fast it earns them back.
AUTH_FAILURE_BURST: Final = 20
AUTH_FAILURE_REFILL_PER_S: Final = 2.0
AUTH_FAILURE_HOSTS: Final = 4096


class AuthFailureLimiter:
    """Token buckets of failed authentications per peer host. Thread-safe.

    Args:
        burst: failures a host may have in a row before it is locked out.
        refill_per_s: failures forgiven per second.
        max_hosts: hosts tracked at most; beyond that the least-spent buckets are dropped.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        burst: int = AUTH_FAILURE_BURST,
        refill_per_s: float = AUTH_FAILURE_REFILL_PER_S,
        max_hosts: int = AUTH_FAILURE_HOSTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._refill = refill_per_s
        self._max_hosts = max_hosts
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at)
        self._locked_out: set[str] = set()

    def _tokens(self, host: str, now: float) -> float:
        tokens, at = self._buckets.get(host, (self._burst, now))
        return min(self._burst, tokens + (now - at) * self._refill)

    def allowed(self, host: str) -> bool:
        """True when ``host`` may try to authenticate now (it has a token left)."""
        with self._lock:
            if host not in self._buckets:
                return True
            now = self._clock()
            tokens = self._tokens(host, now)
            if tokens >= self._burst:
                del self._buckets[host]
                self._locked_out.discard(host)
                return True
            if tokens >= 1.0:
                self._locked_out.discard(host)
                return True
            return False

    def failed(self, host: str) -> bool:
        """Record one failed authentication; True when this failure starts a lockout."""
        with self._lock:
            now = self._clock()
            tokens = max(0.0, self._tokens(host, now) - 1.0)
            self._buckets[host] = (tokens, now)
            if len(self._buckets) > self._max_hosts:
                # forget the hosts closest to a full bucket (they matter least), a tenth at a
                # time so that a swarm of addresses does not cost a sort per failure
                keep = max(1, self._max_hosts * 9 // 10)
                ordered = sorted(self._buckets, key=lambda h: -self._tokens(h, now))
                for gone in ordered[: len(self._buckets) - keep]:
                    del self._buckets[gone]
                    self._locked_out.discard(gone)
            if tokens < 1.0 and host not in self._locked_out:
                self._locked_out.add(host)
                return True
            return False
