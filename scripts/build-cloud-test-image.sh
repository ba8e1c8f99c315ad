#!/usr/bin/env bash
# Build the image the cloud tests run their tasks in (idempotent, cached by tag).
#
# moto runs each Batch job as a container of the job definition's image on
# the local engine, and the Docker backend runs tasks whose job folder is in
# a bucket.  Such a task reads its folder through the SDK, so the image needs
# boto3 and google-cloud-storage on top of the plain test image (python3 +
# cloudpickle, built by scripts/build-test-image.sh).  No registry is
# reachable: the packages and their dependencies are built into wheels on
# the host (`jobsub image build`, the same versions as the host's) and
# installed offline in a build step without network.
#
# moto's containers get no credentials (on AWS the job role provides them,
# through ECS); boto3 refuses to sign without some, so this TEST image
# carries moto's dummy ones.  They are never a real account's.
#
# Usage:   IMAGE="$(scripts/build-cloud-test-image.sh | tail -n1)"
# stdout:  the image name (NAME:TAG) as the last line; progress on stderr.
# Env:     PYTHON (python, else python3): whose boto3 version is copied.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=docker/common.sh
source "$here/docker/common.sh"

if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
boto3_version="$("$PYTHON" -c 'from importlib.metadata import version; print(version("boto3"))')" ||
    die "boto3 is not installed for $PYTHON (pip install 'jobsub[aws]')"
gcs_version="$("$PYTHON" -c 'from importlib.metadata import version; print(version("google-cloud-storage"))')" ||
    die "google-cloud-storage is not installed for $PYTHON (pip install 'jobsub[gcp]')"

base="$(PYTHON="$PYTHON" "$here/build-test-image.sh" | tail -n1)"
image="jobsub-test-python-cloud:${base#*:}-boto3-$boto3_version-gcs-$gcs_version"
label=org.jobsub.test-image.cloud

if docker image inspect "$image" >/dev/null 2>&1; then
    log "image $image is up to date"
    echo "$image"
    exit 0
fi

mkdir -p "$JOBSUB_DOCKER_CACHE"
exec 9>"$JOBSUB_DOCKER_CACHE/.aws-lock"
flock 9
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi

log "building $image: $base + boto3==$boto3_version google-cloud-storage==$gcs_version"
"$PYTHON" -m jobsub.cli image build "$image-packages" --base "$base" "boto3==$boto3_version" \
    "google-cloud-storage==$gcs_version" >&2
docker build -q -t "$image" - >&2 <<EOF
FROM $image-packages
ENV AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
LABEL $label="boto3==$boto3_version google-cloud-storage==$gcs_version; dummy credentials for moto, tests only"
EOF
docker rmi "$image-packages" >/dev/null  # only the name: its layers are the new image's
log "built $image"
echo "$image"
