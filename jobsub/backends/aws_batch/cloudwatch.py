"""A task's output from CloudWatch Logs, read when asked (``job.stdout()``), never while polling.

AWS Batch sends a container's stdout and stderr to ONE log stream (named in
the job's description, ``container.logStreamName``), in the log group of the
definition's ``awslogs`` driver (``/aws/batch/job`` by default).  Reading is
paced by the backend's limiter (GetLogEvents: 10 calls/s per process) and
capped, so a chatty task cannot turn ``stdout()`` into thousands of calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...cloud.aws import AWSGateway
from ...errors import BackendError

__all__ = ["DEFAULT_GROUP", "log_location", "read_stream"]

DEFAULT_GROUP = "/aws/batch/job"
MAX_PAGES = 50
"""At most this many GetLogEvents pages (up to 1 MB each) per read: the rest is cut, saying so."""


def log_location(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(log group, stream) of a job's description, None while it has no stream (not started)."""
    container = job.get("container") or {}
    stream = container.get("logStreamName")
    attempts = job.get("attempts") or []
    if not stream and attempts:
        stream = (attempts[-1].get("container") or {}).get("logStreamName")
    if not stream:
        return None
    options = (container.get("logConfiguration") or {}).get("options") or {}
    return str(options.get("awslogs-group") or DEFAULT_GROUP), str(stream)


def read_stream(api: AWSGateway, group: str, stream: str) -> str | None:
    """The whole stream as text (one line per event), None if it does not exist (yet)."""
    lines: list[str] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        try:
            page = api.call("logs", "GetLogEvents", what=f"reading log stream {group}/{stream}", **kwargs)
        except BackendError as exc:
            if "ResourceNotFoundException" in str(exc):
                return None
            raise
        lines += [str(event.get("message", "")) for event in page.get("events", [])]
        following = page.get("nextForwardToken")
        if not following or following == token:  # the same token again: the end of the stream
            break
        token = following
    else:
        lines.append(f"[jobsub: output cut after {MAX_PAGES} pages; the rest is in {group}/{stream}]")
    return "".join(f"{line}\n" for line in lines)
