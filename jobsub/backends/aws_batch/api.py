"""boto3 for the AWS Batch backend: clients, error mapping, and the one way every call is made.

::

    Api.call("batch", "DescribeJobs", jobs=[...])
        └─ limiter("aws_batch", "DescribeJobs").acquire()     process-wide pacing (jobsub.retry)
           └─ client.describe_jobs(...) ── transient (throttled, 5xx, connection)? ──> backoff, again
                                        └─ other ClientError ──> map_boto_errors ──> jobsub error

botocore's own retries are off (``total_max_attempts=1``): a SubmitJob whose
answer was lost must be looked up before it is sent again (``before_retry``),
which botocore cannot do.  boto3 is imported on first use: ``import jobsub``
never pays for it.  Credentials come from boto3's chain only.
"""

from __future__ import annotations

import collections
import contextlib
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ... import retry as _retry
from ..._version import __version__
from ...errors import BackendError, JobsubError, SubmissionError

__all__ = ["Api", "map_boto_errors", "operation_rates"]

operation_rates: dict[str, float] = {
    # calls per second, per process; SubmitJob stays under AWS's ~50 TPS per account
    "SubmitJob": 40.0,
    "DescribeJobs": 20.0,
    "ListJobs": 20.0,
    "TerminateJob": 20.0,
    "RegisterJobDefinition": 5.0,
    "DescribeJobDefinitions": 10.0,
    "DescribeJobQueues": 10.0,
    "GetLogEvents": 10.0,
    "HeadObject": 100.0,
}


@contextlib.contextmanager
def map_boto_errors(action: str, *, submitting: bool = False) -> Iterator[None]:
    """Turn botocore errors into jobsub's (``from`` the original), naming ``action``.

    A client error (4xx: a bad parameter, a missing queue, access denied) of
    a submission is the submission's fault: ``SubmissionError``.  Everything
    else (5xx, throttling that outlived the retries, no route to the
    endpoint, missing credentials, a client error of a query) means the
    backend cannot answer: ``BackendError``.
    """
    try:
        yield
    except JobsubError:
        raise
    except Exception as exc:
        exceptions = sys.modules.get("botocore.exceptions")
        if exceptions is None or not isinstance(exc, exceptions.BotoCoreError | exceptions.ClientError):
            raise
        if isinstance(exc, exceptions.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            text = f"{action}: AWS answered {error.get('Code', status)}: {error.get('Message', exc)}"
            if submitting and 400 <= status < 500 and status != 429:
                raise SubmissionError(text) from exc
            raise BackendError(text) from exc
        if isinstance(exc, exceptions.NoCredentialsError | exceptions.NoRegionError):
            raise BackendError(
                f"{action}: {exc}. jobsub uses boto3's credential chain (environment, ~/.aws, "
                "instance or container role) and region (AWS_DEFAULT_REGION or ~/.aws/config)"
            ) from exc
        if isinstance(exc, exceptions.ParamValidationError) and submitting:
            raise SubmissionError(f"{action}: {exc}") from exc
        raise BackendError(f"{action}: cannot reach AWS: {exc}") from exc


class Api:
    """The boto3 clients of one backend instance (created on first use, shared by its threads).

    Args:
        region: the AWS region; None: boto3's default (AWS_DEFAULT_REGION, ~/.aws/config).
    """

    def __init__(self, region: str | None = None) -> None:
        self.region = region
        self.counts: collections.Counter[str] = collections.Counter()
        """Calls made per operation (retries included): tests and benchmarks read it."""
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        """The boto3 client of ``service`` (``batch``, ``logs``, ``s3``)."""
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},  # jobsub.retry retries
                    connect_timeout=10, read_timeout=60, max_pool_connections=20,
                    user_agent_extra=f"jobsub/{__version__}",
                )
                with map_boto_errors(f"creating the {service} client"):
                    session = boto3.session.Session(region_name=self.region)
                    found = self._clients[service] = session.client(service, config=config)
            return found

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
        """``client.<operation>(**kwargs)``, paced, retried when transient, errors mapped."""
        method = getattr(self.client(service), _snake(operation))
        pace = _retry.limiter("aws_batch", operation, operation_rates.get(operation, 10.0))

        def once() -> Any:
            self.counts[operation] += 1
            return method(**kwargs)

        with map_boto_errors(what or operation, submitting=submitting):
            return _retry.retry(
                once, what=what or operation, classify=_retry.botocore_transient,
                limiter=pace, before_retry=before_retry,
            )

    def pages(self, service: str, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing (``nextToken``), one paced call per page."""
        token = None
        while True:
            answer = self.call(service, operation, **kwargs, **({"nextToken": token} if token else {}))
            yield from answer.get(key, [])
            token = answer.get("nextToken")
            if not token:
                return


def _snake(operation: str) -> str:
    """``DescribeJobs`` -> ``describe_jobs``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
