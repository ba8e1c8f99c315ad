"""The Kubernetes backend against a REAL API server, with the Job controller and kubelet played.

Real: kube-apiserver 1.20 and etcd (scripts/start-kube.sh; validation, 409/422/404, label
selectors, status subresources, graceful deletion), kube-controller-manager's garbage
collector (a deleted Job's pods go), the pods' containers on the Docker engine, the job
folders (a claim bound to the host's /tmp).  Played (tests/fakes/kube_controller.py): the
Indexed Job controller and the kubelet, which 1.20 lacks or which cannot run here.
"""

from __future__ import annotations

from typing import Any

import pytest

import jobsub
from tests import kube_env, tasks
from tests.conformance.behaviour import BehaviourSuite
from tests.conftest import wait_until

pytestmark = pytest.mark.kube


class TestKubernetesBehaviour(BehaviourSuite):
    """The behaviour suite, every test that applies, none skipped while the services run."""

    cluster = "kubernetes"
