#!/usr/bin/env bash
# Run jobsub's whole test suite on this machine: the README's test command.
#
# Installs the package with its test extras into the active Python, starts the
# services the tests use (a one-node Slurm cluster, a Docker engine and its
# test image) when they can run here, then runs pytest.  Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null || PYTHON=python3

"$PYTHON" -m pip install -q -e '.[test,lint]'

if [[ $(id -u) == 0 && -z ${JOBSUB_NO_SERVICES:-} ]]; then
    # both use apt, so one after the other; each returns at once when already running
    bash scripts/start-slurm.sh
    eval "$(bash scripts/start-docker.sh)"
    JOBSUB_TEST_IMAGE=$(PYTHON="$PYTHON" bash scripts/build-test-image.sh | tail -n 1)
    export DOCKER_HOST JOBSUB_TEST_IMAGE
fi

# static checks first: they take seconds and say exactly what is wrong
"$PYTHON" -m ruff check .
"$PYTHON" -m mypy
"$PYTHON" scripts/check_docs.py

exec "$PYTHON" -m pytest -rs "$@"
