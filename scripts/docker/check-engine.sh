#!/usr/bin/env bash
# Smoke-check the private engine and the test image (diagnostics, not CI):
#   * containers run with --network host and reach the host's loopback;
#   * memory limits are enforced (a 64 MB container allocating 300 MB is
#     OOM-killed: State.OOMKilled=true, exit code 137);
#   * a cloudpickle round trip host -> container -> host works through a
#     bind mount at the same path;
#   * the latency of a trivial `docker run`.
# Usage: scripts/docker/check-engine.sh [IMAGE]   (default: the test image)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

engine_up || die "no engine on $JOBSUB_DOCKER_SOCK; run scripts/start-docker.sh"
image="${1:-$("$here/../build-test-image.sh" | tail -n1)}"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
fail=0
check() { if "$@"; then echo "ok:   $desc"; else echo "FAIL: $desc"; fail=1; fi; }

docker info --format 'engine {{.ServerVersion}}: storage {{.Driver}}, cgroup v{{.CgroupVersion}} ({{.CgroupDriver}}), memory limit support={{.MemoryLimit}}, swap limit support={{.SwapLimit}}, oom-kill-disable support={{.OomKillDisable}}'

# --- host network: the container reaches a server on the host's 127.0.0.1 ----
tmp="$(mktemp -d)"
srv_pid=""
trap 'rm -rf "$tmp"; [ -z "$srv_pid" ] || kill "$srv_pid" 2>/dev/null || true' EXIT
echo hello-from-host >"$tmp/probe.txt"
port="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$tmp" "$port" >/dev/null 2>&1 &
srv_pid=$!
sleep 0.5
desc="--network host container fetches http://127.0.0.1:$port from the host"
check bash -c "docker run --rm --network host '$image' python3 -c \
  'import urllib.request; print(urllib.request.urlopen(\"http://127.0.0.1:$port/probe.txt\", timeout=5).read().decode().strip())' \
  | grep -qx hello-from-host"

# --- memory limit --------------------------------------------------------------
# Only --memory, as a backend would set it (swap then defaults to 2x).
cid="$(docker run -d --network host --memory 64m "$image" \
    python3 -c 'b = bytearray(300 * 1024 * 1024); print("allocated", len(b))')"
docker wait "$cid" >/dev/null
state="$(docker inspect --format 'OOMKilled={{.State.OOMKilled}} ExitCode={{.State.ExitCode}}' "$cid")"
docker rm "$cid" >/dev/null
echo "      --memory 64m, allocate 300 MB: $state"
desc="memory limit enforced (OOMKilled=true, exit 137)"
check test "$state" = "OOMKilled=true ExitCode=137"

# --- cloudpickle round trip -------------------------------------------------------
# The same path on both sides, as the library's Docker backend mounts its
# job directory.
"$PYTHON" - "$tmp" <<'PY'
import sys, cloudpickle
base = 21
with open(f"{sys.argv[1]}/fn.pkl", "wb") as f:
    cloudpickle.dump(lambda x: (x * base, sys.version.split()[0]), f)
PY
docker run --rm --network host -v "$tmp:$tmp" -w "$tmp" "$image" python3 -c '
import pickle, cloudpickle
fn = pickle.load(open("fn.pkl", "rb"))
cloudpickle.dump(fn(2), open("out.pkl", "wb"))'
result="$("$PYTHON" -c 'import pickle, sys; print(pickle.load(open(sys.argv[1], "rb")))' "$tmp/out.pkl")"
echo "      host $("$PYTHON" -V 2>&1) -> container returned $result"
desc="cloudpickle round trip (lambda with closure)"
check test "${result%%,*}" = "(42"

# --- latency --------------------------------------------------------------------
for _ in 1 2 3 4 5; do
    start=$(date +%s%N)
    docker run --rm --network host "$image" python3 -c pass
    echo "      docker run --rm ... python3 -c pass: $(( ($(date +%s%N) - start) / 1000000 )) ms"
done

exit "$fail"
