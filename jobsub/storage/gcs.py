"""Job folders in Google Cloud Storage: ``gs://bucket/prefix``.

Every request goes through the Google gateway (``jobsub.cloud.google``), shared
with the GCP Batch backend: paced per operation, retried when transient, its
errors mapped there; the client library's own retries are off (``retry=None``
on each call), so that one policy decides.  What a store adds::

    404 on an object (and the bucket exists)   -> FileNotFoundError (only a missing object)
    412 on a create-only write                 -> FileExistsError
    401/403, no or expired credentials         -> PermissionError, naming the bucket and the reason
    anything else, a missing bucket included   -> jobsub.errors.BackendError

GCS answers a missing object and a missing bucket with the same 404, so a
404 on a read is taken for a missing object only when the bucket was seen
to exist in the last minute (any successful call shows it; else one listing
asks).  Endpoint and credentials come from the library's own chain
(``STORAGE_EMULATOR_HOST``, Application Default Credentials); jobsub stores
none of them.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import google.cloud.storage  # noqa: F401 - here, so that a missing extra is named when gs:// is opened
from google.api_core import exceptions as api_exceptions

from ..cloud.google import GoogleGateway
from ..errors import BackendError
from ._objects import (
    PAGE_SIZE,
    PARALLEL_DELETES,
    ObjectNames,
    settle_conflict,
    shared_client,
    split_url,
)

__all__ = ["GCSStorage"]

logger = logging.getLogger("jobsub.storage.gcs")

T = TypeVar("T")

_BUCKET_PROOF_S = 60.0
_ENDPOINT_VARIABLES = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS")


class _Missing(FileNotFoundError):
    """A 404 met inside a call: an object, or the bucket (``_call`` tells which)."""


def _gateway_with_client(env: dict[str, str] | None) -> GoogleGateway:
    """A gateway whose storage client is made now: from ``env``'s values, else this process's chain."""
    gateway = GoogleGateway(env=env)
    gateway.client("storage")
    return gateway


class GCSStorage:
    """Job folders under ``gs://bucket/prefix``; keys are relative to the prefix.

    Writes are one upload request up to 8 MiB and a resumable upload above
    (the library's choice); GCS publishes either whole when it completes.
    Create-only writes send ``ifGenerationMatch=0`` on either.

    Args:
        url: ``gs://bucket`` or ``gs://bucket/prefix``.
        client: a ``google.cloud.storage.Client`` to use instead of the process's shared one.
        env: the environment whose values the client is built from instead of this
            process's (a daemon reaching a submission's folder with the
            credentials of the process that submitted it).
    """

    def __init__(self, url: str, *, client: Any = None, env: dict[str, str] | None = None) -> None:
        self.bucket, prefix = split_url(url, "gs")
        self.url = f"gs://{self.bucket}/{prefix}" if prefix else f"gs://{self.bucket}"
        self._names = ObjectNames(prefix)
        self._gateway = GoogleGateway(storage_client=client) if client is not None else None
        self._env = env
        self._bucket_seen = float("-inf")  # when a call last showed that the bucket exists

    @property
    def gateway(self) -> GoogleGateway:
        """The Google gateway this storage calls through (the process's, unless given a client)."""
        if self._gateway is not None:
            return self._gateway
        found: GoogleGateway = shared_client(
            "gcs", functools.partial(_gateway_with_client, self._env), _ENDPOINT_VARIABLES, self._env
        )
        return found

    @property
    def client(self) -> Any:
        """The google-cloud-storage client this storage calls."""
        return self.gateway.client("storage")

    @property
    def first_retry_delay_s(self) -> float:
        """Backoff before the first retry of a call (doubled each time)."""
        return self.gateway.first_delay_s

    @first_retry_delay_s.setter
    def first_retry_delay_s(self, value: float) -> None:
        if self._gateway is None:
            self._gateway = GoogleGateway(storage_client=self.client)
        self._gateway.first_delay_s = value

    def _blob(self, name: str) -> Any:
        return self.client.bucket(self.bucket).blob(name)

    def __repr__(self) -> str:
        return f"GCSStorage({self.url!r})"

    def local_file(self, key: str) -> None:
        return None

    def local_path(self, key: str) -> None:
        return None

    # -- the one way to call GCS ----------------------------------------------------------------
    def _call(self, operation: str, call: Callable[[], T], key: str, *, object_404: bool = False) -> T:
        """``call()`` through the gateway; failures leave as FileNotFoundError, PermissionError or BackendError.

        ``object_404``: a 404 may mean the object is missing (a read, a
        delete), not only the bucket (a listing, an upload).
        """
        where = f"{self.url}/{key}" if key else self.url

        def once() -> T:
            try:
                return call()
            except api_exceptions.NotFound as exc:
                raise _Missing(exc.message) from exc

        try:
            result = self.gateway.run(operation, once, what=f"GCS {operation} {where} (bucket {self.bucket!r})")
        except _Missing as exc:
            if object_404 and self._bucket_exists():
                raise FileNotFoundError(where) from exc
            message = f"GCS bucket {self.bucket!r} does not exist ({operation} {where}: {exc})"
            raise BackendError(message) from exc
        self._bucket_seen = time.monotonic()
        return result

    def _bucket_exists(self) -> bool:
        """Whether the bucket exists, asked (one listing) unless a call showed it in the last minute."""
        if time.monotonic() - self._bucket_seen < _BUCKET_PROOF_S:
            return True
        try:
            self._page(self._names.base, "", delimiter="/", token=None, size=1)
        except BackendError:
            return False
        return True

    # -- reading --------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        download = functools.partial(self._blob(self._names.name(key)).download_as_bytes, retry=None)
        data: bytes = self._call("objects.get", download, key, object_404=True)
        return data

    def _page(
        self, prefix: str, key: str, *, delimiter: str | None, token: str | None, size: int | None = None
    ) -> tuple[list[str], str | None]:
        """One listing call: the names (objects, then common prefixes) and the next page's token."""
        arguments = {"prefix": prefix, "delimiter": delimiter, "max_results": size or PAGE_SIZE, "page_token": token}

        def call() -> tuple[list[str], str | None]:
            found = self.client.list_blobs(self.bucket, retry=None, **arguments)
            page = next(found.pages)  # fetches exactly one page
            return [blob.name for blob in page] + list(page.prefixes), found.next_page_token

        return self._call("objects.list", call, key)

    def _names_under(self, prefix: str, key: str, *, delimiter: str | None) -> Iterator[list[str]]:
        token: str | None = None
        while True:
            names, token = self._page(prefix, key, delimiter=delimiter, token=token)
            yield names
            if not token:
                return

    def list(self, prefix: str) -> list[str]:
        folder = self._names.folder(prefix)
        names = [name for page in self._names_under(folder, prefix, delimiter="/") for name in page]
        return self._names.children(folder, names)

    def exists(self, key: str) -> bool:
        """One listing of the names starting with the key's (a 404 on the object could be the bucket's)."""
        name = self._names.name(key)
        below = name + "/"
        for entries in self._names_under(name, key, delimiter="/"):
            if name in entries or below in entries:
                return True
            if any(entry > below for entry in entries):
                return False  # GCS lists in name order: nothing later can match
        return False

    # -- writing --------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes, *, create_only: bool = False, private: bool = False) -> None:
        blob = self._blob(self._names.name(key))
        attempts = 0

        def call() -> None:
            nonlocal attempts
            attempts += 1
            try:
                blob.upload_from_string(data, if_generation_match=0 if create_only else None, retry=None)
            except api_exceptions.PreconditionFailed:
                if not create_only:
                    raise
                settle_conflict(lambda: self.read_bytes(key), data, f"{self.url}/{key}", retried=attempts > 1)

        self._call("objects.insert", call, key)

    def delete(self, key: str) -> None:
        """The object ``key`` and everything under ``key/``.

        The JSON API deletes one object a request (its batch endpoint is not
        emulated anywhere we can test), so deletes go out a few at a time.
        """
        name = self._names.name(key)
        names = [name, *(n for page in self._names_under(name + "/", key, delimiter=None) for n in page)]
        if len(names) == 1:
            self._delete_one(key, name)
            return
        with ThreadPoolExecutor(PARALLEL_DELETES) as pool:
            for _ in pool.map(functools.partial(self._delete_one, key), names):
                pass  # raises the first failure

    def _delete_one(self, key: str, name: str) -> None:
        try:
            remove = functools.partial(self._blob(name).delete, retry=None)
            self._call("objects.delete", remove, key, object_404=True)
        except FileNotFoundError:
            pass  # gone already: what a delete wants

    # -- set-up ---------------------------------------------------------------------------------
    def check_credentials(self) -> None:
        (self._gateway or GoogleGateway()).check_credentials()

    def check_writable(self) -> None:
        """Write and delete a probe object; a missing bucket or a refusal names the bucket and the reason."""
        probe = f".jobsub-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.write_bytes(probe, b"")
        except (PermissionError, BackendError) as exc:
            raise type(exc)(f"jobsub cannot write job folders in {self.url}: {exc}") from exc
        try:
            self._delete_one(probe, self._names.name(probe))
        except (PermissionError, BackendError) as exc:
            logger.warning("could not delete the probe object %s/%s: %s", self.url, probe, exc)

    def task_env(self) -> dict[str, str]:
        """Where GCS is when it is an emulator; never credentials."""
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        return {"STORAGE_EMULATOR_HOST": host} if host else {}
