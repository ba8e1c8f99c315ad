"""Retrying transient failures and pacing calls: written once, for every backend and store.

::

    retry(call, what=..., classify=slurm_transient)      # or http_transient, botocore_transient...
        call() ──ok──> value
          └─ exception ─> classify(exc) ── None ──> raised as it is (the caller maps it)
                               └─ delay hint (Retry-After, or 0) ──> sleep max(hint, backoff with
                                  jitter), then again, at most ``attempts`` times in all

    limiter("aws_batch", "SubmitJob", rate_per_s=40).acquire()    # one per (backend, endpoint),
                                                                   # shared by every executor
                                                                   # of the process

Classifiers answer one question, "is this worth another try, and not before
when?", for the failures each service is known to return when busy:
Slurm's controller time-outs and submit limits, HTTP 429/500/502/503/504
(with ``Retry-After``), botocore's throttling codes, gRPC
``RESOURCE_EXHAUSTED``/``UNAVAILABLE``.  Everything else is not retried: a
wrong parameter does not become right by asking again.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "RateLimiter",
    "botocore_transient",
    "google_transient",
    "http_transient",
    "limiter",
    "retry",
    "slurm_transient",
]

logger = logging.getLogger("jobsub.retry")

T = TypeVar("T")

Classifier = Callable[[BaseException], "float | None"]
"""``exc`` -> None (not transient: raise it) or the least number of seconds to wait before retrying."""


def retry(
    call: Callable[[], T],
    *,
    what: str,
    classify: Classifier,
    attempts: int = 6,
    first_delay_s: float = 1.0,
    max_delay_s: float = 30.0,
    before_retry: Callable[[], T | None] | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``call()``; retry what ``classify`` calls transient, with exponential backoff and jitter.

    Args:
        call: the operation; it raises on failure.
        what: how to name it in log messages ("sbatch", "S3 PutObject runs/…/result/0.0.pkl").
        classify: transient or not, and the server's own wait hint (``Retry-After``).
        attempts: calls in all, the first included.
        first_delay_s: the backoff before the second call; doubled each time, capped at ``max_delay_s``.
        before_retry: asked before each retry; a non-None value is returned instead of calling
            again (a submission that went through although its answer was lost: never submit twice).
        limiter: paced before every call; told about throttling so that other callers slow down too.
        sleep: for tests with a fake clock.
    """
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        if limiter is not None:
            limiter.acquire()
        try:
            return call()
        except Exception as exc:
            hint = classify(exc)
            if hint is None or attempt == attempts:
                raise
            if limiter is not None:
                limiter.throttled()
            # "equal jitter": at least half the backoff, so retries never bunch up at zero
            wait = max(hint, delay / 2 + random.uniform(0, delay / 2))
            logger.warning("%s: %s; retry %d of %d in %.1f s", what, _one_line(exc), attempt, attempts - 1, wait)
            sleep(wait)
            delay = min(max_delay_s, delay * 2)
            if before_retry is not None:
                found = before_retry()
                if found is not None:
                    logger.warning("%s went through although its answer was lost: %s", what, found)
                    return found
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# -- classifiers ------------------------------------------------------------------------------
_SLURM_TRANSIENT = re.compile(
    r"Socket timed out|Unable to contact slurm controller|Resource temporarily unavailable"
    r"|(Assoc|QOS)\w*MaxSubmitJob\w*|temporarily unable to accept job|Zero Bytes were transmitted"
    r"|Transport endpoint is not connected|Connection refused|timed out after",
    re.IGNORECASE,
)


def slurm_transient(exc: BaseException) -> float | None:
    """Slurm's controller is busy or briefly away, or a submit limit is reached (it frees up)."""
    return 0.0 if _SLURM_TRANSIENT.search(str(exc)) else None


_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def http_transient(status: int | None, headers: Any = None) -> float | None:
    """HTTP 429 and 5xx gateway/unavailable answers; ``Retry-After`` (seconds) is honoured."""
    if status not in _TRANSIENT_STATUS:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after") if headers else None
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0  # an HTTP date: not worth parsing, the backoff covers it


_BOTO_THROTTLING = frozenset(
    {
        "Throttling", "ThrottlingException", "ThrottledException", "TooManyRequestsException",
        "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException", "SlowDown",
        "ProvisionedThroughputExceededException", "TransactionInProgressException",
        "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
        "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    }
)


def botocore_transient(exc: BaseException) -> float | None:
    """botocore's throttling codes, HTTP 429/5xx, and connections that broke on the way."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        meta = response.get("ResponseMetadata", {})
        if code in _BOTO_THROTTLING:
            return http_transient(429, meta.get("HTTPHeaders")) or 0.0
        return http_transient(meta.get("HTTPStatusCode"), meta.get("HTTPHeaders"))
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError"}:
        return 0.0
    return None


_GRPC_TRANSIENT = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL"})


def google_transient(exc: BaseException) -> float | None:
    """google-api-core errors (gRPC and REST): RESOURCE_EXHAUSTED, UNAVAILABLE, 429 and 5xx."""
    grpc_status = getattr(exc, "grpc_status_code", None)
    if grpc_status is not None and getattr(grpc_status, "name", "") in _GRPC_TRANSIENT:
        return 0.0
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        headers = getattr(getattr(exc, "response", None), "headers", None)
        return http_transient(code, headers)
    return None


# -- pacing -----------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket: at most ``rate_per_s`` calls a second on average, ``burst`` at once.

    When a caller reports throttling, the rate halves for a minute (then
    recovers), so that every executor of the process backs off together
    rather than each on its own.
    """

    def __init__(self, rate_per_s: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = float(burst if burst is not None else max(1, int(rate_per_s)))
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._slow_until = float("-inf")
        self._lock = threading.Lock()

    def _current_rate(self, now: float) -> float:
        return self.rate / 2 if now < self._slow_until else self.rate

    def acquire(self) -> None:
        """Wait until a call may go out."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self._current_rate(now))
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self._current_rate(now)
            time.sleep(wait)

    def throttled(self) -> None:
        """The service said "slow down": halve the rate for a minute."""
        with self._lock:
            self._slow_until = self._clock() + 60.0


_limiters: dict[tuple[str, str], RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter(backend: str, endpoint: str, rate_per_s: float, burst: int | None = None) -> RateLimiter:
    """The process's one limiter for ``(backend, endpoint)`` (created with the first caller's rate)."""
    with _limiters_lock:
        found = _limiters.get((backend, endpoint))
        if found is None:
            found = _limiters[(backend, endpoint)] = RateLimiter(rate_per_s, burst)
        return found
