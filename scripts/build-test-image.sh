#!/usr/bin/env bash
# Build the Python base image the Docker tests run their callables in.
#
# No container registry is reachable, so nothing can be pulled: the image is
# a debootstrapped Debian bookworm (python3 3.11) imported with
# `docker import`.  cloudpickle must be the SAME version as on the host
# (pickles cross the boundary), so it and the library's core deps
# (typing-extensions, filelock) are copied in at the host's versions.  pip
# inside the chroot fails TLS here, so wheels are downloaded with the host's
# pip and installed with `--target`.
#
# Cached at two levels:
#   * the image tag encodes the cloudpickle version (plus a hash of any
#     extra packages); an existing tag whose recorded package pins match is
#     reused without doing anything;
#   * the debootstrap rootfs is kept as a tarball under
#     $JOBSUB_DOCKER_CACHE, so a rebuild with other packages takes seconds.
#
# Usage:   IMAGE="$(scripts/build-test-image.sh | tail -n1)"
# stdout:  the image name (NAME:TAG) as the last line; progress on stderr.
# Env:     PYTHON                  host interpreter whose versions are copied
#                                  (default: `python`, else `python3`)
#          JOBSUB_TEST_IMAGE_NAME  repository name (jobsub-test-python)
#          JOBSUB_TEST_IMAGE_EXTRA_PIP  extra requirement specs, space
#                                  separated (e.g. "numpy==1.26.4")
#          DEBOOTSTRAP_MIRROR      Debian mirror (debootstrap's default)
#          JOBSUB_DOCKER_*         see scripts/docker/common.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=docker/common.sh
source "$here/docker/common.sh"

image_repo="${JOBSUB_TEST_IMAGE_NAME:-jobsub-test-python}"
extra_pip="${JOBSUB_TEST_IMAGE_EXTRA_PIP:-}"
suite=bookworm
base_tar="$JOBSUB_DOCKER_CACHE/rootfs-$suite-minbase-python3.tar"
wheels="$JOBSUB_DOCKER_CACHE/wheels"
pins_label=org.jobsub.test-image.pins

# --- host interpreter and the versions to copy ------------------------------
# In CI a virtualenv is active and `python` is its interpreter; prefer it
# over a `python3` that might resolve elsewhere.
if [ -z "${PYTHON:-}" ]; then
    if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
# One `name==version` per package.  cloudpickle is mandatory (a mismatch
# breaks unpickling); a core dep missing on the host is taken at its latest
# version with a warning.
pins="$("$PYTHON" - <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in ("cloudpickle", "typing_extensions", "filelock"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        if name == "cloudpickle":
            sys.exit(f"cloudpickle is not installed for {sys.executable}")
        print(f"warning: {name} not installed on the host; using latest",
              file=sys.stderr)
        print(name)
PY
)"
cp_version="$(sed -n 's/^cloudpickle==//p' <<<"$pins")"
# shellcheck disable=SC2086  # word splitting of the extra specs is intended
pins="$(printf '%s\n' $pins $extra_pip | sort -u | paste -sd' ')"

tag="3.11-cp${cp_version}"
if [ -n "$extra_pip" ]; then
    # Different extras must not overwrite each other's image.
    tag="$tag-$(printf '%s' "$pins" | sha256sum | cut -c1-8)"
fi
image="$image_repo:$tag"

# The engine must be up; starting it is idempotent and fast when it is.
eval "$("$here/start-docker.sh")"

# :latest names the plain test image (host versions, no extras); an image
# with extra packages only gets its own tag.
tag_latest() {
    if [ -z "$extra_pip" ]; then docker tag "$image" "$image_repo:latest"; fi
}

# --- cache hit: the tag exists and was built from the same pins -------------
use_cached_image() {
    local have_pins
    have_pins="$(docker image inspect \
        --format "{{ index .Config.Labels \"$pins_label\" }}" "$image" 2>/dev/null)" ||
        return 1
    if [ "$have_pins" != "$pins" ]; then
        log "image $image was built from [$have_pins], want [$pins]: rebuilding"
        return 1
    fi
    log "image $image is up to date ($pins)"
    tag_latest
    echo "$image"
}
use_cached_image && exit 0

mkdir -p "$JOBSUB_DOCKER_CACHE" "$wheels"
# Two CI steps building at once would race on the cache; serialize them,
# and let the second one reuse what the first built.
exec 9>"$JOBSUB_DOCKER_CACHE/.lock"
flock 9
use_cached_image 2>/dev/null && exit 0

work="$(mktemp -d "$JOBSUB_DOCKER_CACHE/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- base rootfs (slow: ~60 s; cached as a tarball) --------------------------
if [ ! -s "$base_tar" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        log "installing debootstrap"
        apt_install debootstrap
    fi
    log "debootstrapping $suite (minbase + python3) ..."
    # minbase: just the essential packages + apt; python3 is what we need.
    # No mirror argument: debootstrap's default (deb.debian.org) is
    # reachable; DEBOOTSTRAP_MIRROR overrides it.
    debootstrap --variant=minbase --include=python3 \
        "$suite" "$work/rootfs" ${DEBOOTSTRAP_MIRROR:+"$DEBOOTSTRAP_MIRROR"} >&2
    # Package caches and lists are useless in the image (apt cannot reach a
    # mirror from a test container anyway) and add tens of MB.
    rm -rf "$work/rootfs"/var/cache/apt/archives/*.deb \
        "$work/rootfs"/var/cache/apt/*.bin \
        "$work/rootfs"/var/lib/apt/lists/* \
        "$work/rootfs"/var/log/*.log
    # Write under a temporary name so an interrupted run never leaves a
    # truncated tarball that later runs would trust.
    tar -C "$work/rootfs" --numeric-owner -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/rootfs"
    log "cached rootfs: $base_tar ($(du -h "$base_tar" | cut -f1))"
fi

# --- add the Python packages ---------------------------------------------------
log "unpacking cached rootfs"
mkdir "$work/rootfs"
tar -C "$work/rootfs" --numeric-owner -xf "$base_tar"

# The container's interpreter decides the site directory (3.11 on bookworm).
py_bin="$(readlink "$work/rootfs/usr/bin/python3")"   # e.g. python3.11
site="$work/rootfs/usr/local/lib/$py_bin/dist-packages"
mkdir -p "$site"

log "adding $pins"
# shellcheck disable=SC2086  # $pins is a list of requirement specs
{
    export PIP_ROOT_USER_ACTION=ignore   # we are root on purpose: --target into a rootfs
    # Download with the host's pip (TLS works here, not in the chroot);
    # wheels only, so nothing is ever built.  The wheel cache makes rebuilds
    # offline once the versions were fetched.
    "$PYTHON" -m pip download --quiet --disable-pip-version-check \
        --no-deps --only-binary=:all: --dest "$wheels" $pins
    # --no-deps: we pin exactly what we copy; --no-index: from the cache only.
    "$PYTHON" -m pip install --quiet --disable-pip-version-check \
        --no-deps --no-index --find-links "$wheels" --target "$site" $pins
} >&2

# --- import ----------------------------------------------------------------------
log "importing $image"
# LANG: Debian's python otherwise runs with an ASCII locale.
# The pins label lets the next run confirm the tag matches the host.
tar -C "$work/rootfs" --numeric-owner -c . |
    docker import \
        -c 'ENV LANG=C.UTF-8' \
        -c "LABEL $pins_label=\"$pins\"" \
        -m "jobsub test image: debian $suite minbase, $py_bin, $pins" \
        - "$image" >&2
tag_latest
# A rebuilt tag leaves its previous image untagged (163 MB each); drop such
# dangling test images, and only ours (they carry the pins label).
docker image prune -f --filter "label=$pins_label" >/dev/null

log "built $image"
echo "$image"
