#!/usr/bin/env bash
# Run jobsub's whole test suite on this machine: the README's test command.
#
# Installs the package with its test extras into the active Python, starts the
# services the tests use (a one-node Slurm cluster, a Docker engine and its
# test image, moto for S3 and AWS Batch (with its image), fake-gcs-server for GCS and a Kubernetes API server) when they can run here,
# then runs pytest.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null || PYTHON=python3

"$PYTHON" -m pip install -q -e '.[test,lint,docs]'

if [[ $(id -u) == 0 && -z ${JOBSUB_NO_SERVICES:-} ]]; then
    # a terminal and a browser for the tests that look as a user does (tmux, headless Chromium)
    if ! command -v tmux >/dev/null || ! command -v chromium >/dev/null; then
        apt-get install -y -q --no-install-recommends tmux chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends tmux chromium >/dev/null; }
    fi
    # both use apt, so one after the other; each returns at once when already running
    bash scripts/start-slurm.sh
    eval "$(bash scripts/start-docker.sh)"
    JOBSUB_TEST_IMAGE=$(PYTHON="$PYTHON" bash scripts/build-test-image.sh | tail -n 1)
    export DOCKER_HOST JOBSUB_TEST_IMAGE
    # a real Kubernetes API server (built once from Debian's source package, cached), whose
    # Job controller and kubelet the tests play on the engine above
    kube_env=$(bash scripts/start-kube.sh)
    eval "$kube_env"
fi
if [[ -z ${JOBSUB_NO_SERVICES:-} ]]; then
    # emulated S3 and GCS on loopback (no root needed): each prints the `export` lines that point
    # the SDKs at it; moto starts after the engine, whose DOCKER_HOST runs its Batch jobs
    # (assigned first: a failed start then stops this script, as `eval "$(...)"` alone would not)
    moto_env=$(PYTHON="$PYTHON" bash scripts/start-moto.sh)
    gcs_env=$(PYTHON="$PYTHON" bash scripts/start-fake-gcs.sh)
    eval "$moto_env"
    eval "$gcs_env"
    if [[ -n ${DOCKER_HOST:-} ]]; then
        # what moto's Batch jobs and tasks with bucket folders run in: the test image plus the SDKs
        JOBSUB_CLOUD_TEST_IMAGE=$(PYTHON="$PYTHON" bash scripts/build-cloud-test-image.sh | tail -n 1)
        export JOBSUB_CLOUD_TEST_IMAGE
    fi
fi

# static checks first: they take seconds and say exactly what is wrong
"$PYTHON" -m ruff check .
"$PYTHON" -m mypy
"$PYTHON" scripts/check_docs.py
NO_MKDOCS_2_WARNING=1 "$PYTHON" -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"

exec "$PYTHON" -m pytest -rs "$@"
