"""The Kubernetes API behind one door: the official client, paced, retried and its errors mapped.

::

    KubeGateway(kubeconfig=None, context=None)
        client("batch") -> BatchV1Api, client("core") -> CoreV1Api   one ApiClient, SDK retries off
        call("batch", "create_namespaced_job", namespace=..., body=...)
            429 (Retry-After honoured), 500/502/503/504, a connection reset or refused -> again
            422 -> the API's own message (field paths); 403 -> the verb and resource refused;
            404 of a namespace -> "namespace X does not exist"; no configuration -> says where it looked
        check_credentials()   no kubeconfig (nor a pod's service account), or no such context:
                              a BackendError naming what was looked for; nothing is sent

The configuration is the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``, or
the file and context given), else the in-cluster service account: a client
running in a pod needs nothing set.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from ..errors import BackendError, SubmissionError
from ..retry import http_transient
from .gateway import Gateway

__all__ = ["KubeGateway", "api_message", "status_of"]

_SERVICES = {"batch": "BatchV1Api", "core": "CoreV1Api"}
_RESET = frozenset(
    {
        "ProtocolError", "NewConnectionError", "ConnectionResetError", "ConnectionRefusedError",
        "RemoteDisconnected", "ReadTimeoutError", "ConnectTimeoutError", "MaxRetryError",
    }
)


class KubeGateway(Gateway):
    """The Kubernetes clients of one kubeconfig context (or of the pod this runs in)."""

    provider: ClassVar[str] = "kubernetes"
    # client-side pacing well under an API server's default fairness limits
    rates: ClassVar[Mapping[str, float]] = {"create_namespaced_job": 20.0}
    default_rate: ClassVar[float] = 50.0

    def __init__(self, kubeconfig: str | None = None, context: str | None = None) -> None:
        super().__init__()
        self.kubeconfig = kubeconfig
        self.context = context
        self._api_client: Any = None

    def api_client(self) -> Any:
        """The one ``ApiClient`` every service client of this gateway shares (its connection pool)."""
        if self._api_client is None:
            self._api_client = _load_api_client(self.kubeconfig, self.context)
        return self._api_client

    def check_credentials(self) -> None:
        """The kubeconfig (and its context) or the pod's service account exists; read here, nothing sent.

        Asked by the executor before anything is written, so a machine without a cluster
        configuration fails at once, naming the files and the context it looked for.
        """
        path = kubeconfig_path(self.kubeconfig)
        if path is None:
            if _in_cluster():
                return
            raise BackendError(f"no Kubernetes configuration found: {_looked_for(self.kubeconfig)}; {_WHERE}")
        from kubernetes import config

        try:
            contexts, _ = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
        except Exception as exc:  # the loader's ConfigException, or YAML it cannot read
            raise BackendError(f"the kubeconfig {path} cannot be read: {exc}") from None
        names = [c.get("name") for c in contexts or []]
        if self.context and self.context not in names:  # (a missing current-context: the loader said so)
            raise BackendError(f"the kubeconfig {path} has no context {self.context!r}: its contexts are {names}")

    def default_namespace(self) -> str:
        """Where Jobs go when no namespace is given, as kubectl decides: the namespace of the
        kubeconfig's context (the one named, else the current one), else the pod's own (its service
        account's ``namespace`` file), else ``default``.  Read here, nothing sent."""
        path = kubeconfig_path(self.kubeconfig)
        if path is not None:
            from kubernetes import config

            contexts, current = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            chosen = next((c for c in contexts or [] if c.get("name") == self.context), current) if self.context else current
            return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
        if _in_cluster():
            with contextlib.suppress(OSError), open(_SERVICE_ACCOUNT_NAMESPACE) as stream:
                return stream.read().strip() or "default"
        return "default"

    def make_client(self, service: str) -> Any:
        from kubernetes import client

        return getattr(client, _SERVICES[service or "core"])(self.api_client())

    def transient(self, exc: BaseException) -> float | None:
        status = getattr(exc, "status", None)
        if _is_api_error(exc) and isinstance(status, int):
            return http_transient(status, getattr(exc, "headers", None))
        for cls in type(exc).__mro__:
            if cls.__name__ in _RESET:
                return 0.0
        return None

    def map_error(self, exc: BaseException, action: str, *, submitting: bool) -> Exception | None:
        name = type(exc).__name__
        if name == "ConfigException":
            return BackendError(f"{action}: no Kubernetes configuration found ({exc}); {_WHERE}")
        if not _is_api_error(exc) and self.transient(exc) is None:
            return None
        status = getattr(exc, "status", None)
        message = api_message(exc)
        if status == 404 and _details(exc).get("kind") == "namespaces":
            namespace = _details(exc).get("name", "")
            return SubmissionError(
                f"{action}: namespace {namespace!r} does not exist (create it, or set k8s_namespace)"
            )
        if status == 403:
            return (SubmissionError if submitting else BackendError)(
                f"{action}: forbidden by the cluster's access rules (RBAC): {message}"
            )
        if status == 422 or (submitting and status == 400):
            return SubmissionError(f"{action}: the API server refused the manifest: {message}")
        return BackendError(f"{action}: {status or name} {message}".rstrip())


_WHERE = (
    "set KUBECONFIG to a kubeconfig file, or run inside a pod with a service account"
)


_SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _candidates(kubeconfig: str | None) -> list[str]:
    """The kubeconfig files looked for, in order: the one given, else ``KUBECONFIG``'s, else ``~/.kube/config``."""
    listed = kubeconfig or os.environ.get("KUBECONFIG", "")
    paths = [p for p in listed.split(os.pathsep) if p]
    return [os.path.expanduser(p) for p in paths] or [os.path.expanduser("~/.kube/config")]


def kubeconfig_path(kubeconfig: str | None) -> str | None:
    """The first kubeconfig file of ``_candidates`` that exists, or None."""
    return next((p for p in _candidates(kubeconfig) if os.path.isfile(p)), None)


def _in_cluster() -> bool:
    """Running in a pod with a service account (what ``load_incluster_config`` reads)."""
    return "KUBERNETES_SERVICE_HOST" in os.environ and os.path.isfile(_SERVICE_ACCOUNT_TOKEN)


def _looked_for(kubeconfig: str | None) -> str:
    from_env = os.environ.get("KUBECONFIG")
    if from_env and kubeconfig in (None, from_env):  # the backend takes KUBECONFIG's when given none
        source = "from KUBECONFIG"
    else:
        source = "given" if kubeconfig else "the default"
    return (
        f"no kubeconfig file at {', '.join(_candidates(kubeconfig))} ({source}), and not in a pod "
        f"(KUBERNETES_SERVICE_HOST and {_SERVICE_ACCOUNT_TOKEN})"
    )


def _load_api_client(kubeconfig: str | None, context: str | None) -> Any:
    """An ApiClient from the kubeconfig, else the in-cluster service account; SDK retries off."""
    from kubernetes import client, config

    configuration = client.Configuration()
    path = kubeconfig_path(kubeconfig)
    if path is not None or not _in_cluster():
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path or _candidates(kubeconfig)[0], context=context, client_configuration=configuration
        )
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.retries = False  # the gateway retries, paced; urllib3's own would hide 429s
    return client.ApiClient(configuration)


def _is_api_error(exc: BaseException) -> bool:
    """The client's ApiException or one of its subclasses (ServiceException, NotFoundException...)."""
    return any(cls.__name__ == "ApiException" for cls in type(exc).__mro__)


def status_of(exc: BaseException | None) -> int | None:
    """The HTTP status of the API error behind ``exc`` (a mapped jobsub error's cause), or None."""
    for candidate in (exc, getattr(exc, "__cause__", None)):
        if candidate is not None and _is_api_error(candidate):
            status = getattr(candidate, "status", None)
            return status if isinstance(status, int) else None
    return None


def _body(exc: BaseException) -> dict[str, Any]:
    try:
        found = json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _details(exc: BaseException) -> dict[str, Any]:
    details = _body(exc).get("details")
    return details if isinstance(details, dict) else {}


def api_message(exc: BaseException) -> str:
    """The API server's own words for a failed call (its Status message), else the HTTP reason."""
    message = _body(exc).get("message")
    if message:
        return str(message)
    return str(getattr(exc, "reason", "") or exc).strip()
