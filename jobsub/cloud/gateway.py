"""One provider's SDK behind one door: the client, pacing, retries, counters and error mapping.

::

    gateway.call("batch", "DescribeJobs", jobs=[...])
        └─ limiter(provider, operation).acquire()        process-wide pacing (jobsub.retry)
           └─ client(service).<method>(**kwargs) ── transient(exc)? ──> backoff, again
                                                 └─ other error ──> map_error ──> jobsub error

Storage (``s3://``, ``gs://``) and backends (AWS Batch, GCP Batch, Kubernetes)
of one provider share one subclass, so a throttled bucket slows the
backend's calls too, and a missing credential reads the same wherever it is
met.  The SDK is imported by ``make_client`` on first use: ``import jobsub``
never pays for it.  A subclass says only what is the provider's own:

- ``provider``: the limiter's name, shared by every gateway of the provider in the process;
- ``rates``: calls per second per operation (the provider's quotas), ``default_rate`` otherwise;
- ``make_client(service)``: the SDK client, with the SDK's own retries off;
- ``transient(exc)``: worth another try, and not before when (``jobsub.retry`` classifiers);
- ``map_error(exc, action, submitting=)``: the jobsub error for a provider exception, or None
  for an exception that is not the provider's (it is raised as it is);
- ``method_name(operation)``: the client's method for an operation (``DescribeJobs`` ->
  ``describe_jobs`` on boto3).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

from .. import retry as _retry
from ..errors import JobsubError

__all__ = ["Gateway", "error_boundary"]

T = TypeVar("T")


@contextlib.contextmanager
def error_boundary(map_error: Callable[[Exception], Exception | None]) -> Iterator[None]:
    """An SDK's exceptions raised inside become what ``map_error`` makes of them (``from`` the
    original); jobsub's own errors, and what ``map_error`` leaves (None), pass as they are.

    The one shape of every SDK boundary (httpx's ``map_httpcore_exceptions``): a gateway's
    ``errors``, and the Docker engine's ``map_docker_errors``.
    """
    try:
        yield
    except JobsubError:
        raise
    except Exception as exc:
        mapped = map_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


class Gateway:
    """The clients of one provider for one configuration (created on first use, shared by threads)."""

    provider: ClassVar[str] = ""
    rates: ClassVar[Mapping[str, float]] = {}
    default_rate: ClassVar[float] = 10.0
    attempts: ClassVar[int] = 6
    first_delay_s: float = 1.0
    """Backoff before the first retry of a call (doubled each time); tests of retries lower it."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        """Calls made per operation (retries included): tests and benchmarks read it."""
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- what a provider says ------------------------------------------------------------------
    def make_client(self, service: str) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.make_client")

    def transient(self, exc: BaseException) -> float | None:
        raise NotImplementedError(f"{type(self).__name__}.transient")

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        raise NotImplementedError(f"{type(self).__name__}.map_error")

    def method_name(self, operation: str) -> str:
        return operation

    # -- written once ----------------------------------------------------------------------------
    def client(self, service: str = "") -> Any:
        """The SDK client of ``service`` (made once; its creation's errors mapped)."""
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                with self.errors(f"creating the {self.provider} {service or 'client'}".rstrip()):
                    found = self._clients[service] = self.make_client(service)
            return found

    def limiter(self, operation: str) -> _retry.RateLimiter:
        return _retry.limiter(self.provider, operation, self.rates.get(operation, self.default_rate))

    @contextlib.contextmanager
    def errors(self, action: str, *, submitting: bool = False) -> Iterator[None]:
        """Provider exceptions raised inside become jobsub errors (``from`` the original), naming ``action``.

        A client error of a submission (the input is wrong) is a ``SubmissionError``;
        everything else the provider raises (5xx, throttling that outlived the retries,
        no route, missing credentials) is a ``BackendError``: ``map_error`` decides.
        """
        with error_boundary(lambda exc: self.map_error(exc, action, submitting=submitting)):
            yield

    def run(
        self,
        operation: str,
        call: Callable[[], T],
        *,
        what: str = "",
        submitting: bool = False,
        before_retry: Callable[[], T | None] | None = None,
    ) -> T:
        """``call()`` counted as ``operation``, paced, retried when transient, errors mapped."""

        def once() -> T:
            self.counts[operation] += 1
            return call()

        with self.errors(what or operation, submitting=submitting):
            return _retry.retry(
                once, what=what or operation, classify=self.transient, attempts=self.attempts,
                first_delay_s=self.first_delay_s, limiter=self.limiter(operation), before_retry=before_retry,
            )

    def call(
        self,
        service: str,
        operation: str,
        *,
        what: str = "",
        submitting: bool = False,
        before_retry: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``client(service).<method_name(operation)>(**kwargs)`` through ``run``."""
        method = getattr(self.client(service), self.method_name(operation))
        return self.run(
            operation, lambda: method(**kwargs), what=what, submitting=submitting, before_retry=before_retry
        )
