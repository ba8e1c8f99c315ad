"""Job folders in Amazon S3 (or a store that speaks its API): ``s3://bucket/prefix``.

Every request goes through the AWS gateway (``jobsub.cloud.aws.S3Gateway``,
shared with the AWS Batch backend): ``jobsub.retry`` and a process-wide
limiter per operation, botocore's own retries off, so that one policy (with
its backoff, its log lines and its shared slow-down) decides.  SDK errors are
translated there, at the boundary, and nowhere else::

    NoSuchKey                                   -> FileNotFoundError (only a missing key)
    PreconditionFailed on a create-only write   -> FileExistsError
    AccessDenied, bad or expired credentials    -> PermissionError, naming the bucket and S3's reason
    anything else, NoSuchBucket included        -> jobsub.errors.BackendError

A missing bucket is never "a missing key": a client waiting for a result
would wait forever.  Endpoint, region and credentials come from boto3's own
chain (``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``,
profiles, instance roles); jobsub stores none of them.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import boto3  # noqa: F401 - the extra's marker: without it, open_storage names ``jobsub[aws]``
import botocore.exceptions

from ..cloud.aws import S3Gateway, error_code
from ..errors import BackendError
from ._objects import PAGE_SIZE, ObjectNames, settle_conflict, split_url

__all__ = ["S3Storage"]

logger = logging.getLogger("jobsub.storage.s3")

T = TypeVar("T")


class S3Storage:
    """Job folders under ``s3://bucket/prefix``; keys are relative to the prefix.

    Writes are single PUTs (atomic: S3 shows the old object or the whole new
    one); above ``multipart_threshold`` a multipart upload, which S3 also
    publishes whole, at CompleteMultipartUpload.  Create-only writes send
    ``If-None-Match: *`` on either.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.
        client: a boto3 S3 client to use instead of the process's shared one
            (one with its own credentials, endpoint or event hooks).
        env: the environment whose values the client is built from instead of this
            process's (a daemon reaching a submission's folder with the
            credentials of the process that submitted it).
    """

    multipart_threshold: int = 64 * 2**20
    """Bytes above which a write is a multipart upload (one PUT may carry 5 GiB, but a retry resends it all)."""
    part_size: int = 16 * 2**20
    """Bytes per part of a multipart upload (S3 wants at least 5 MiB but for the last, and 10,000 parts at most)."""

    def __init__(self, url: str, *, client: Any = None, env: dict[str, str] | None = None) -> None:
        self.bucket, prefix = split_url(url, "s3")
        self.url = f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"
        self._names = ObjectNames(prefix)
        self.gateway = S3Gateway(self.bucket, client, env)
        """Every S3 call of this storage: paced, retried, its errors mapped (jobsub.cloud.aws)."""

    @property
    def client(self) -> Any:
        """The boto3 client this storage calls."""
        return self.gateway.client()

    @property
    def first_retry_delay_s(self) -> float:
        """Backoff before the first retry of a call (doubled each time)."""
        return self.gateway.first_delay_s

    @first_retry_delay_s.setter
    def first_retry_delay_s(self, value: float) -> None:
        self.gateway.first_delay_s = value

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def local_file(self, key: str) -> None:
        return None

    def local_path(self, key: str) -> None:
        return None

    # -- the one way to call S3 -------------------------------------------------------------------
    def _call(self, operation: str, call: Callable[[], T], key: str) -> T:
        """``call()``, retried and paced; it fails as FileNotFoundError, PermissionError or BackendError."""
        where = f"{self.url}/{key}" if key else self.url
        return self.gateway.run(operation, call, what=f"S3 {operation} {where}")

    # -- reading --------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        name = self._names.name(key)

        def call() -> bytes:
            # the body is read inside the retried call: a stream cut short is read again whole
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=name)["Body"].read()
            return body

        return self._call("GetObject", call, key)

    def _pages(self, prefix: str, key: str, *, delimiter: str | None) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages of names under ``prefix``: 1,000 names a call."""
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": PAGE_SIZE}
        if delimiter:
            arguments["Delimiter"] = delimiter
        while True:
            listing = functools.partial(self.client.list_objects_v2, **arguments)
            page: dict[str, Any] = self._call("ListObjectsV2", listing, key)
            yield page
            if not page.get("IsTruncated"):
                return
            arguments["ContinuationToken"] = page["NextContinuationToken"]

    @staticmethod
    def _entries(page: dict[str, Any]) -> list[str]:
        return [o["Key"] for o in page.get("Contents", ())] + [p["Prefix"] for p in page.get("CommonPrefixes", ())]

    def list(self, prefix: str) -> list[str]:
        folder = self._names.folder(prefix)
        names = [name for page in self._pages(folder, prefix, delimiter="/") for name in self._entries(page)]
        return self._names.children(folder, names)

    def exists(self, key: str) -> bool:
        """One listing of the names starting with the key's: is the key itself or ``key/`` among them?

        Not HeadObject: its 404 has no body, and a missing bucket would look
        like a missing key.  A listing names its missing bucket.
        """
        name = self._names.name(key)
        below = name + "/"
        for page in self._pages(name, key, delimiter="/"):
            entries = self._entries(page)
            if name in entries or below in entries:
                return True
            if any(entry > below for entry in entries):
                return False  # S3 lists in name order: nothing later can match
        return False

    # -- writing --------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False, private: bool = False) -> None:
        name = self._names.name(key)
        if len(data) > self.multipart_threshold:
            self._write_multipart(key, name, data, create_only=create_only)
            return
        conditions = {"IfNoneMatch": "*"} if create_only else {}
        attempts = 0

        def call() -> None:
            nonlocal attempts
            attempts += 1
            try:
                self.client.put_object(Bucket=self.bucket, Key=name, Body=data, **conditions)
            except botocore.exceptions.ClientError as exc:
                if not (create_only and error_code(exc) == "PreconditionFailed"):
                    raise
                settle_conflict(lambda: self.read_bytes(key), data, f"{self.url}/{key}", retried=attempts > 1)

        self._call("PutObject", call, key)

    def _write_multipart(self, key: str, name: str, data: bytes, *, create_only: bool) -> None:
        """Parts, then CompleteMultipartUpload: the object appears whole, or not at all.

        ``If-None-Match: *`` on the completion keeps create-only writes
        create-only.  A failed upload is aborted, so that its parts are not
        kept (and billed); a bucket lifecycle rule for incomplete uploads
        catches what an interrupted process leaves.
        """
        client = self.client
        target = {"Bucket": self.bucket, "Key": name}
        start_upload = functools.partial(client.create_multipart_upload, **target)
        upload = {**target, "UploadId": self._call("CreateMultipartUpload", start_upload, key)["UploadId"]}
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                send = functools.partial(
                    client.upload_part, **upload, PartNumber=number, Body=data[start : start + self.part_size]
                )
                parts.append({"PartNumber": number, "ETag": self._call("UploadPart", send, key)["ETag"]})
            attempts = 0

            def complete() -> None:
                nonlocal attempts
                attempts += 1
                try:
                    client.complete_multipart_upload(
                        **upload, MultipartUpload={"Parts": parts}, **({"IfNoneMatch": "*"} if create_only else {})
                    )
                except botocore.exceptions.ClientError as exc:
                    code = error_code(exc)
                    lost_answer = attempts > 1 and code == "NoSuchUpload"  # an earlier attempt completed it
                    if lost_answer and not create_only:
                        return
                    if lost_answer or (create_only and code == "PreconditionFailed"):
                        settle_conflict(lambda: self.read_bytes(key), data, f"{self.url}/{key}", retried=attempts > 1)
                        return
                    raise

            self._call("CompleteMultipartUpload", complete, key)
        except BaseException:
            try:
                self._call("AbortMultipartUpload", functools.partial(client.abort_multipart_upload, **upload), key)
            except (BackendError, PermissionError) as exc:
                logger.warning("could not abort upload %s of %s/%s: %s", upload["UploadId"], self.url, key, exc)
            raise
        logger.debug("%s/%s: %d bytes in %d parts", self.url, key, len(data), len(parts))

    def delete(self, key: str) -> None:
        """The object ``key`` and everything under ``key/``: 1,000 names per DeleteObjects call."""
        name = self._names.name(key)
        batch = [name]
        for page in self._pages(name + "/", key, delimiter=None):
            batch += [o["Key"] for o in page.get("Contents", ())]
            while len(batch) >= PAGE_SIZE:
                self._delete_names(batch[:PAGE_SIZE], key)
                batch = batch[PAGE_SIZE:]
        if batch:
            self._delete_names(batch, key)

    def _delete_names(self, names: Sequence[str], key: str) -> None:
        request = {"Objects": [{"Key": name} for name in names], "Quiet": True}

        def call() -> None:
            response = self.client.delete_objects(Bucket=self.bucket, Delete=request)
            errors = response.get("Errors") or []
            if errors:
                # one failed key fails the call, as a request would: retried when S3 was busy (deleting
                # the others again is harmless), mapped like any other answer otherwise
                first = errors[0]
                message = f"{first.get('Message', '')} ({len(errors)} keys, e.g. {first.get('Key')})"
                answer = {"Error": {"Code": first.get("Code", ""), "Message": message}, **response}
                raise botocore.exceptions.ClientError(answer, "DeleteObjects")

        self._call("DeleteObjects", call, key)

    # -- set-up ---------------------------------------------------------------------------------
    def check_credentials(self) -> None:
        self.gateway.check_credentials()

    def check_writable(self) -> None:
        """Write and delete a probe object; a missing bucket or a refusal names the bucket and S3's reason."""
        probe = f".jobsub-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.write_bytes(probe, b"")
        except (PermissionError, BackendError) as exc:
            raise type(exc)(f"jobsub cannot write job folders in {self.url}: {exc}") from exc
        try:
            self._delete_names([self._names.name(probe)], probe)
        except (PermissionError, BackendError) as exc:
            # writing is what jobs need; a store that forbids deletes only keeps this empty object
            logger.warning("could not delete the probe object %s/%s: %s", self.url, probe, exc)

    def task_env(self) -> dict[str, str]:
        """Where S3 is (an emulator's endpoint, the region), as boto3 reads it; never credentials."""
        names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
        env = {name: os.environ[name] for name in names if os.environ.get(name)}
        region = os.environ.get("AWS_DEFAULT_REGION") or self.client.meta.region_name
        if region:
            env["AWS_DEFAULT_REGION"] = region
        return env
