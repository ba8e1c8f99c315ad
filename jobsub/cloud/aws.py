"""boto3 behind one door: the gateway every AWS user of jobsub shares (S3 folders, AWS Batch).

::

    AWSGateway(region).call("batch", "DescribeJobs", jobs=[...])     (jobsub.cloud.gateway)
        └─ limiter("aws", "DescribeJobs")  ──>  client("batch").describe_jobs(...)
              transient: botocore's throttling codes, 429/5xx, broken connections, and S3's
                         409 ConditionalRequestConflict and bodies cut short ──> backoff, again
              otherwise: map_error ──> SubmissionError (a submission's 4xx) | BackendError
    S3Gateway(bucket): the same calls; errors in the storage contract's terms
              NoSuchKey -> FileNotFoundError, refused / no credentials -> PermissionError,
              anything else (NoSuchBucket included) -> BackendError

botocore's own retries are off (``total_max_attempts=1``): a SubmitJob whose
answer was lost must be looked up before it is sent again (``before_retry``),
which botocore cannot do, and one policy (``jobsub.retry``) decides for every
call.  boto3 is imported on first use.  Endpoint, region and credentials come
from boto3's own chain, or from another process's environment passed as values
(``session_of``: a daemon serving a submission); jobsub stores none of them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from .._version import __version__
from ..errors import BackendError, SubmissionError
from ..retry import botocore_transient
from .gateway import Gateway

__all__ = ["ENDPOINT_VARIABLES", "AWSGateway", "S3Gateway", "error_code", "machine_credentials", "session_of"]

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE")
"""What tells boto3 where S3 is (a change of them makes a new shared client: tests move them)."""

_S3_READ, _S3_WRITE = 5500.0, 3500.0  # S3's documented request rates per prefix
_DENIED = frozenset({
    "AccessDenied", "AllAccessDisabled", "AccountProblem", "ExpiredToken", "InvalidAccessKeyId", "InvalidToken",
    "SignatureDoesNotMatch", "TokenRefreshRequired", "UnauthorizedAccess",
})
_NO_CREDENTIALS = (
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "TokenRetrievalError", "SSOError",
)


def _botocore() -> Any:
    """botocore.exceptions if boto3 was ever used in this process (else no error can be botocore's)."""
    return sys.modules.get("botocore.exceptions")


def _boto3_credentials() -> Any:
    """What boto3's credential chain resolves to in this process's environment (None: nothing)."""
    import boto3

    return boto3.session.Session().get_credentials()


def machine_credentials() -> dict[str, str]:
    """This machine's AWS credentials and region (boto3's chain) as a container's variables: for
    containers run on this machine only (an attached debug run), never a scheduled job's."""
    import boto3

    session = boto3.session.Session()
    found = session.get_credentials()
    env: dict[str, str] = {}
    if found is not None:
        frozen = found.get_frozen_credentials()
        env.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    if session.region_name:
        env.setdefault("AWS_DEFAULT_REGION", session.region_name)
    return env


def session_of(env: Mapping[str, str], region: str | None = None) -> Any:
    """A boto3 session built from ``env``'s values (another process's environment), not this one's.

    Keys (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), profile, region
    and config files are given to the session as arguments: ``os.environ`` is neither read for them
    nor changed, so other threads of the process never see another process's credentials.  Without
    keys in ``env``, the chain goes on from the profile (files, SSO, roles) but never takes this
    process's own keys for the submitter's.
    """
    import boto3
    import botocore.session

    core = botocore.session.Session()
    settings = {
        "profile": env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE"),
        "region": region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        "config_file": env.get("AWS_CONFIG_FILE"),
        "credentials_file": env.get("AWS_SHARED_CREDENTIALS_FILE"),
    }
    for name, value in settings.items():
        if value:
            core.set_config_variable(name, value)
    if env.get("AWS_ACCESS_KEY_ID"):
        core.set_credentials(env["AWS_ACCESS_KEY_ID"], env.get("AWS_SECRET_ACCESS_KEY"), env.get("AWS_SESSION_TOKEN"))
    else:
        core.get_component("credential_provider").remove("env")  # this process's keys are not the submitter's
    return boto3.session.Session(botocore_session=core)


def _endpoint_of(env: Mapping[str, str], service: str) -> str | None:
    """The endpoint ``env`` names for ``service`` (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``)."""
    return env.get(f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}") or env.get("AWS_ENDPOINT_URL") or None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` ("NoSuchKey"), "" for anything else."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _is(exc: BaseException, *names: str) -> bool:
    return bool({cls.__name__ for cls in type(exc).__mro__} & set(names))


class AWSGateway(Gateway):
    """The boto3 clients of one region (created on first use, shared by threads).

    Args:
        region: the AWS region; None: boto3's default (AWS_DEFAULT_REGION, ~/.aws/config).
    """

    provider = "aws"
    rates: ClassVar[dict[str, float]] = {
        # calls per second, per process; SubmitJob stays under AWS Batch's ~50 TPS per account
        "SubmitJob": 40.0, "DescribeJobs": 20.0, "ListJobs": 20.0, "TerminateJob": 20.0,
        "RegisterJobDefinition": 5.0, "DescribeJobDefinitions": 10.0, "DescribeJobQueues": 10.0,
        "GetLogEvents": 10.0, "HeadObject": 100.0,
        **dict.fromkeys(("GetObject", "ListObjectsV2"), _S3_READ),
        **dict.fromkeys((
            "PutObject", "DeleteObjects", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
            "AbortMultipartUpload",
        ), _S3_WRITE),
    }

    _given: Any = None
    """A client given instead of boto3's chain (its credentials are its own)."""
    _env: Mapping[str, str] | None = None
    """Another process's environment the clients are built from (``session_of``), instead of this one's."""

    def __init__(self, region: str | None = None) -> None:
        super().__init__()
        self.region = region

    def make_client(self, service: str) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # the error a user sees in `jobsub info` and at submit: name the extra
            raise BackendError(f"AWS ({service}) needs boto3: pip install 'jobsub[aws]' ({exc})") from exc

        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # jobsub.retry retries
            connect_timeout=10, read_timeout=60, max_pool_connections=20,
            user_agent_extra=f"jobsub/{__version__}",
        )
        if self._env is None:
            return boto3.session.Session(region_name=self.region).client(service, config=config)
        endpoint = _endpoint_of(self._env, service)
        if endpoint is None:  # this process's AWS_ENDPOINT_URL is not the submitter's
            config = config.merge(Config(ignore_configured_endpoint_urls=True))
        return session_of(self._env, self.region).client(service, config=config, endpoint_url=endpoint)

    def check_credentials(self) -> None:
        """boto3's chain finds no credentials (an emulator takes dummy ones: they pass)."""
        if self._given is None and _boto3_credentials() is None:
            raise BackendError(
                "no AWS credentials found: boto3 looked in the environment (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY), the profile (AWS_PROFILE, ~/.aws/credentials, ~/.aws/config: keys, "
                "SSO, assumed roles), web identity, and the container and instance roles"
            )

    def method_name(self, operation: str) -> str:
        """``DescribeJobs`` -> ``describe_jobs``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()

    def transient(self, exc: BaseException) -> float | None:
        """botocore's transient failures, and two of S3's own.

        409 ConditionalRequestConflict: a conditional write met a concurrent
        write of the same key; S3 asks to retry (the retry then wins or gets 412).
        A body cut short on the way is worth another call too.
        """
        hint = botocore_transient(exc)
        if hint is not None:
            return hint
        if error_code(exc) == "ConditionalRequestConflict" or _is(exc, "HTTPClientError", "IncompleteReadError"):
            return 0.0
        return None

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        """A client error (4xx: a bad parameter, a missing queue, access denied) of a submission
        is the submission's fault: ``SubmissionError``.  Everything else (5xx, throttling that
        outlived the retries, no route to the endpoint, missing credentials, a client error of
        a query) means the backend cannot answer: ``BackendError``."""
        exceptions = _botocore()
        if exceptions is None or not isinstance(exc, exceptions.BotoCoreError | exceptions.ClientError):
            return None
        if isinstance(exc, exceptions.ClientError):
            status = _status(exc)
            text = f"{action}: AWS answered {error_code(exc) or status}: {exc.response.get('Error', {}).get('Message', exc)}"
            return SubmissionError(text) if submitting and 400 <= status < 500 and status != 429 else BackendError(text)
        if isinstance(exc, exceptions.NoCredentialsError | exceptions.NoRegionError):
            return BackendError(
                f"{action}: {exc}. jobsub uses boto3's credential chain (environment, ~/.aws, "
                "instance or container role) and region (AWS_DEFAULT_REGION or ~/.aws/config)"
            )
        if isinstance(exc, exceptions.ParamValidationError) and submitting:
            return SubmissionError(f"{action}: {exc}")
        return BackendError(f"{action}: cannot reach AWS: {exc}")

    def pages(self, service: str, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paginated listing (``nextToken``), one paced call per page."""
        token = None
        while True:
            answer = self.call(service, operation, **kwargs, **({"nextToken": token} if token else {}))
            yield from answer.get(key, [])
            token = answer.get("nextToken")
            if not token:
                return


class S3Gateway(AWSGateway):
    """S3 calls for the storage of one bucket: the process's shared client (or one given), and
    errors as the ``Storage`` protocol names them.

    Args:
        bucket: named in errors.
        client: a boto3 S3 client to use instead of the process's shared one.
        env: the environment whose values the client is built from instead of this process's (a daemon
            reaching a submission's folder with the credentials of the process that submitted it).
    """

    def __init__(self, bucket: str, client: Any = None, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.bucket = bucket
        self._given = client
        self._env = env

    def client(self, service: str = "s3") -> Any:
        """The given client, else the process's one (a new one after a fork or a change of
        ``ENDPOINT_VARIABLES``)."""
        if self._given is not None:
            return self._given
        from ..storage._objects import shared_client

        with self.errors("creating the S3 client"):
            return shared_client("s3", lambda: self.make_client("s3"), ENDPOINT_VARIABLES, self._env)

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        exceptions = _botocore()
        if exceptions is None:
            return None
        if isinstance(exc, exceptions.ClientError):
            code, status = error_code(exc), _status(exc)
            reason = f"{code or status}: {exc.response.get('Error', {}).get('Message') or 'no message'}"
            _, operation, where = [*action.split(" ", 2), "", ""][:3]  # "S3 <operation> <where>"
            if code == "NoSuchKey":
                return FileNotFoundError(where)
            if code == "NoSuchBucket":
                return BackendError(f"S3 bucket {self.bucket!r} does not exist ({operation} {where}: {reason})")
            if code in _DENIED or status in (401, 403):
                return PermissionError(f"S3 refused {operation} on {where} (bucket {self.bucket!r}): {reason}")
            return BackendError(f"{action} failed (HTTP {status}): {reason}")
        if _is(exc, *_NO_CREDENTIALS):
            return PermissionError(
                f"{action}: no usable AWS credentials in boto3's chain (environment, profile, SSO, instance role): {exc}"
            )
        if isinstance(exc, exceptions.BotoCoreError):
            return BackendError(f"{action} failed: {exc}")
        return None

