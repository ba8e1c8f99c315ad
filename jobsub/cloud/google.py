"""Google APIs behind one door: the Cloud Storage, Batch and Logging clients, their retries and errors.

::

    transient  google-api-core's 429 / RESOURCE_EXHAUSTED / UNAVAILABLE / 5xx, a 408, a broken
               connection: retried here (the clients' own retries are off: Batch's default
               retry does not retry a 429 on GetJob)
    errors     401/403, missing or expired credentials -> PermissionError
               4xx of a submission (the request is wrong)  -> SubmissionError
               anything else                              -> BackendError, naming the action and the HTTP code

Where the services are: Cloud Storage follows its library (``STORAGE_EMULATOR_HOST``,
Application Default Credentials); Batch and Logging follow ``JOBSUB_GCP_BATCH_ENDPOINT``
and ``JOBSUB_GCP_LOGGING_ENDPOINT`` when set (an emulator, a private endpoint).  A
plain ``http://`` endpoint is an emulator on this machine and gets anonymous
credentials, as google-cloud-storage does for its own.  Batch and Logging speak REST
(``transport="rest"``): one wire format in production and in the tests.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import BackendError, SubmissionError
from ..retry import google_transient
from .gateway import Gateway

__all__ = ["BATCH_ENDPOINT", "LOGGING_ENDPOINT", "GoogleGateway", "storage_client_of"]

BATCH_ENDPOINT = "JOBSUB_GCP_BATCH_ENDPOINT"
LOGGING_ENDPOINT = "JOBSUB_GCP_LOGGING_ENDPOINT"
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


class GoogleGateway(Gateway):
    """The Google clients of one configuration: ``storage``, ``batch`` and ``logging:<project>``.

    Args:
        storage_client: a ``google.cloud.storage.Client`` to use instead of making one.
        env: another process's environment the storage client is built from (``storage_client_of``)
            instead of this one's.
    """

    provider = "google"
    rates: ClassVar[Mapping[str, float]] = {
        # GCS's starting rates per bucket (it scales up past them)
        "objects.get": 5000.0, "objects.list": 5000.0, "objects.insert": 1000.0, "objects.delete": 1000.0,
        # Batch's regional quotas, not raisable: 15,000 reads and 6,000 writes a minute
        "GetJob": 250.0, "ListTasks": 250.0, "ListJobs": 250.0, "GetTask": 250.0,
        "CreateJob": 100.0, "CancelJob": 100.0, "DeleteJob": 100.0,
        # Cloud Logging: 60 entries.list a minute per project
        "ListLogEntries": 1.0,
    }

    def __init__(self, *, storage_client: Any = None, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._given = storage_client is not None
        self._env = env
        if storage_client is not None:
            self._clients["storage"] = storage_client

    def check_credentials(self) -> None:
        """Application Default Credentials find nothing (an emulator, ``STORAGE_EMULATOR_HOST`` or a
        plain ``http://`` endpoint, needs none; a given client has its own)."""
        emulated = [os.environ.get(v, "") for v in ("STORAGE_EMULATOR_HOST", BATCH_ENDPOINT, LOGGING_ENDPOINT)]
        if self._given or emulated[0] or any(e.startswith("http://") for e in emulated[1:]):
            return
        import google.auth
        import google.auth.exceptions

        try:
            google.auth.default()
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise BackendError(
                "no Google credentials found: Application Default Credentials looked in "
                "GOOGLE_APPLICATION_CREDENTIALS, gcloud's application_default_credentials.json and the "
                f"metadata server ({exc})"
            ) from None

    def make_client(self, service: str) -> Any:
        kind, _, project = service.partition(":")
        if kind == "storage":
            import google.cloud.storage

            return google.cloud.storage.Client() if self._env is None else storage_client_of(self._env)
        if kind == "batch":
            from google.cloud import batch_v1

            options, credentials = _endpoint(BATCH_ENDPOINT)
            return batch_v1.BatchServiceClient(transport="rest", credentials=credentials, client_options=options)
        if kind == "logging":
            from google.cloud import logging as cloud_logging

            options, credentials = _endpoint(LOGGING_ENDPOINT)
            return cloud_logging.Client(  # type: ignore[no-untyped-call]
                project=project or None, credentials=credentials, _use_grpc=False, client_options=options,
            )
        raise ValueError(f"no Google client for {service!r}")

    def method_name(self, operation: str) -> str:
        """``GetJob`` -> ``get_job``; GCS's ``objects.get`` style names are only counted (``run``)."""
        return _CAMEL.sub("_", operation).lower()

    def transient(self, exc: BaseException) -> float | None:
        hint = google_transient(exc)
        if hint is not None:
            return hint
        if getattr(exc, "code", None) == 408:  # Google's own advice: retry a request timeout
            return 0.0
        import google.auth.exceptions
        import requests.exceptions

        broken = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, google.auth.exceptions.TransportError)
        if isinstance(exc, broken) or type(exc).__name__ in ("ChunkedEncodingError", "DataCorruption"):
            return 0.0
        return None

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        import google.auth.exceptions as auth
        import requests.exceptions
        from google.api_core import exceptions as api

        if isinstance(exc, (api.Forbidden, api.Unauthorized)):
            return PermissionError(f"{action} was refused (HTTP {exc.code}): {exc.message}")
        if isinstance(exc, api.GoogleAPICallError):
            code = exc.code if isinstance(exc.code, int) else None
            wrong_input = submitting and code is not None and 400 <= code < 500 and code not in (408, 429)
            return (SubmissionError if wrong_input else BackendError)(f"{action} failed (HTTP {code}): {exc.message}")
        if isinstance(exc, (auth.TransportError, requests.exceptions.RequestException)):
            return BackendError(f"{action} failed: {exc}")
        if isinstance(exc, auth.GoogleAuthError):  # none found (Application Default Credentials), expired, unusable
            return PermissionError(f"{action}: credentials: {exc}")
        return None

    # -- Batch -------------------------------------------------------------------------------------
    def batch(self, operation: str, *, what: str = "", submitting: bool = False, **kwargs: Any) -> Any:
        """One Batch RPC (``GetJob``, ``CreateJob``...) through ``call``, the client's own retry off."""
        return self.call("batch", operation, what=what or operation, submitting=submitting, retry=None, **kwargs)


def storage_client_of(env: Mapping[str, str]) -> Any:
    """A Cloud Storage client built from ``env``'s values (another process's environment), not this one's.

    ``STORAGE_EMULATOR_HOST`` is the API endpoint, with anonymous credentials (as the library does
    for its own emulator variable); ``GOOGLE_APPLICATION_CREDENTIALS`` a credentials file;
    ``GOOGLE_CLOUD_PROJECT`` the project.  ``os.environ`` is never changed for it.  Without a
    credentials file, Application Default Credentials of this process's user apply.
    """
    import google.auth
    from google.cloud import storage

    project = env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or None
    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator:
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(project=project, credentials=anonymous, client_options={"api_endpoint": emulator})
    path = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path:
        return storage.Client(project=project) if project else storage.Client()
    credentials, found_project = google.auth.load_credentials_from_file(path, scopes=storage.Client.SCOPE)  # type: ignore[no-untyped-call]
    return storage.Client(project=project or found_project, credentials=credentials)


def _endpoint(variable: str) -> tuple[dict[str, str], Any]:
    """Client options and credentials for the endpoint ``variable`` names (None, None: Google's own)."""
    endpoint = os.environ.get(variable)
    if not endpoint:
        return {}, None
    if endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return {"api_endpoint": endpoint}, AnonymousCredentials()  # type: ignore[no-untyped-call]
    return {"api_endpoint": endpoint}, None
