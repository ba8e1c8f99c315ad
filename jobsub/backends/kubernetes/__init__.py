"""The Kubernetes backend (``cluster="kubernetes"``): Indexed Jobs through the official client."""

from .backend import KubernetesBackend
from .params import KubernetesParameters

__all__ = ["KubernetesBackend", "KubernetesParameters"]
