#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager for the Kubernetes tests (idempotent).
#
# No binary API server can be downloaded here (no registry, no release
# downloads), but Debian bookworm's `kubernetes` source package is fully
# vendored and builds offline with Debian's Go.  The binaries are cached
# under $JOBSUB_KUBE_CACHE/<version>/ (a directory a kept machine keeps), so
# only the first run pays the ~5 minutes of both cores; later runs return at
# once.  The source tree (2.2 GB) is built in a scratch directory and removed.
#
# Usage:   bindir="$(scripts/build-kube.sh | tail -n 1)"
# stdout:  the directory holding kube-apiserver and kube-controller-manager.
# Env:     JOBSUB_KUBE_CACHE (/var/cache/jobsub-kube); JOBSUB_KUBE_BUILD_DIR
#          (scratch, default under /var/tmp); needs root for apt-get.
set -euo pipefail

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The version Debian bookworm ships (1.20.5+really1.20.2); the cache key.
version="${JOBSUB_KUBE_VERSION:-1.20.2}"
cache="${JOBSUB_KUBE_CACHE:-/var/cache/jobsub-kube}"
bindir="$cache/$version"

have_binaries() {
    [ -x "$bindir/kube-apiserver" ] && [ -x "$bindir/kube-controller-manager" ]
}

ensure_runtime_packages() {
    # etcd (the store) and kubectl (the proxy) are run by start-kube.sh
    local missing=()
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v kubectl >/dev/null 2>&1 || missing+=(kubectl)
    if [ "$#" -gt 0 ]; then missing+=("$@"); fi
    if [ "${#missing[@]}" -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${missing[@]}" >&2 || {
            apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}" >&2
        }
    fi
}

if have_binaries; then
    ensure_runtime_packages
    echo "$bindir"
    exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/build.lock"
flock -w 1800 9 || die "another build-kube.sh holds $cache/build.lock"
if have_binaries; then
    ensure_runtime_packages
    echo "$bindir"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "building the API server needs root (apt-get); run as root once"
ensure_runtime_packages golang-go rsync jq

scratch="${JOBSUB_KUBE_BUILD_DIR:-/var/tmp/jobsub-kube-build}"
rm -rf "$scratch"
mkdir -p "$scratch/lists/partial" "$scratch/src"
trap 'rm -rf "$scratch"' EXIT

# A private sources list holding only the deb-src entry: the machine's own
# apt configuration is left untouched.
echo "deb-src http://deb.debian.org/debian bookworm main" >"$scratch/sources.list"
apt_src=(-o "Dir::Etc::sourcelist=$scratch/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$scratch/lists")
log "fetching the kubernetes source package index"
apt-get "${apt_src[@]}" update -q >&2
cd "$scratch/src"
log "downloading the kubernetes source package"
apt-get "${apt_src[@]}" source --download-only kubernetes >&2
orig="$(ls ./*.orig.tar.* | head -n 1)"
[ -n "$orig" ] || die "no orig tarball in $(ls)"
mkdir tree
tar -C tree --strip-components=1 -xf "$orig"

# As debian/rules does: a GOPATH whose k8s.io/kubernetes is the tree (a plain
# `go build -mod=vendor` fails on this release's staging layout).
cd tree
mkdir -p .go/src/k8s.io
ln -s "$PWD" .go/src/k8s.io/kubernetes
cd .go/src/k8s.io/kubernetes
log "building kube-apiserver and kube-controller-manager (about 5 minutes)"
GOPATH="$scratch/src/tree/.go" GO111MODULE=off GOFLAGS= CGO_ENABLED=0 \
    GOCACHE="$scratch/gocache" \
    make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2

tmp="$cache/.partial-$version"
rm -rf "$tmp"
mkdir -p "$tmp"
for name in kube-apiserver kube-controller-manager; do
    found="$(find _output -type f -name "$name" -perm -u+x | head -n 1)"
    [ -n "$found" ] || die "the build made no $name"
    cp "$found" "$tmp/$name"
done
rm -rf "$bindir"
mv "$tmp" "$bindir"
log "cached in $bindir"
echo "$bindir"
