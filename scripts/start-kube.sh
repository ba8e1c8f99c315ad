#!/usr/bin/env bash
# Start a Kubernetes control plane on loopback for the test suite (idempotent).
#
# Real etcd, a real kube-apiserver (token auth, AlwaysAllow) and a real
# kube-controller-manager (garbage collection, namespaces, TTL after
# finished) built by scripts/build-kube.sh, with the Job controller, node
# lifecycle and service controllers switched off: the suite plays the Job
# controller and the kubelet itself (tests/fakes/kube_controller.py), running
# each pod as a container on the Docker engine.  `kubectl proxy` gives a
# plain-HTTP endpoint that the tests (and their fault proxy) talk to.
#
# Usage:   eval "$(scripts/start-kube.sh)"
# stdout:  `export` lines only: KUBECONFIG (the plain-HTTP proxy, no credentials)
#          and JOBSUB_KUBE_DIR (certificates for the played kubelet, logs).
# Env:     JOBSUB_KUBE_DIR (state, default /tmp/jobsub-kube-<uid>); JOBSUB_KUBE_ETCD_PORT (23790);
#          JOBSUB_KUBE_API_PORT (16443); JOBSUB_KUBE_PROXY_PORT (18001); JOBSUB_KUBE_TIMEOUT (s, 60).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=emulators/common.sh
source "$here/emulators/common.sh"

dir="${JOBSUB_KUBE_DIR:-${TMPDIR:-/tmp}/jobsub-kube-$(id -u)}"
etcd_port="${JOBSUB_KUBE_ETCD_PORT:-23790}"
api_port="${JOBSUB_KUBE_API_PORT:-16443}"
proxy_port="${JOBSUB_KUBE_PROXY_PORT:-18001}"
timeout_s="${JOBSUB_KUBE_TIMEOUT:-60}"
proxy_url="http://127.0.0.1:$proxy_port"
# the proxy answers the API's discovery only when the API server behind it does
probe="$proxy_url/api/v1/namespaces/default"
needle='"name":"default"'

finish() {
    echo "export KUBECONFIG=$dir/proxy.kubeconfig"
    echo "export JOBSUB_KUBE_DIR=$dir"
}

if answers "$probe" "$needle"; then
    log "the Kubernetes API answers on $proxy_url"
    finish
    exit 0
fi

mkdir -p "$dir"
chmod 700 "$dir"
exec 9>"$dir/start.lock"
flock -w 600 9 || die "another start-kube.sh holds $dir/start.lock"
if answers "$probe" "$needle"; then
    log "the Kubernetes API answers on $proxy_url"
    finish
    exit 0
fi

bindir="$(bash "$here/build-kube.sh" | tail -n 1)"
[ -x "$bindir/kube-apiserver" ] || die "no kube-apiserver in $bindir"

# one daemon: pid file NAME.pid, log NAME.log; started unless it runs already
running() {
    local pid
    pid="$(cat "$dir/$1.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && pid_alive "$pid" && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null
}
launch() {  # NAME NEEDLE COMMAND...
    local name=$1 needle=$2
    shift 2
    if running "$name" "$needle"; then
        return 0
    fi
    log "starting $name (log: $dir/$name.log)"
    echo "=== $(date -Is) start-kube.sh" >>"$dir/$name.log"
    setsid nohup "$@" </dev/null >>"$dir/$name.log" 2>&1 9>&- &
    echo $! >"$dir/$name.pid"
}
wait_for() {  # NAME URL NEEDLE: emulators/common.sh's wait, on that daemon's pid and log
    logfile="$dir/$1.log"
    wait_until_up "$(cat "$dir/$1.pid")" "$2" "$3" "$timeout_s"
}

# -- credentials made once: service-account signing key, a bearer token, the kubelet's cert --
if [ ! -s "$dir/sa.key" ]; then
    openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
fi
if [ ! -s "$dir/tokens.csv" ]; then
    token="$(openssl rand -hex 24)"
    echo "$token,jobsub-admin,1,system:masters" >"$dir/tokens.csv"
fi
token="$(cut -d, -f1 "$dir/tokens.csv")"
if [ ! -s "$dir/kubelet.key" ]; then
    # the played kubelet's serving certificate: the API server connects to it for pod logs
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=127.0.0.1 \
        -keyout "$dir/kubelet.key" -out "$dir/kubelet.crt" 2>/dev/null
fi
# kubectl and the controller manager reach the API server with the token; the server's
# certificate is self-signed (made at its first start), so they skip its verification on loopback
cat >"$dir/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: jobsub-test
  cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}
users:
- name: jobsub-admin
  user: {token: "$token"}
contexts:
- name: jobsub-test
  context: {cluster: jobsub-test, user: jobsub-admin, namespace: default}
current-context: jobsub-test
EOF
# what the tests use: plain HTTP through kubectl proxy, which adds the token itself
cat >"$dir/proxy.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: jobsub-test
  cluster: {server: "$proxy_url"}
users:
- name: jobsub-test
  user: {}
contexts:
- name: jobsub-test
  context: {cluster: jobsub-test, user: jobsub-test, namespace: default}
current-context: jobsub-test
EOF
chmod 600 "$dir"/*.kubeconfig "$dir/tokens.csv" "$dir"/*.key

mkdir -p "$dir/etcd" "$dir/certs"
launch etcd etcd etcd --name jobsub-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "jobsub-test=http://127.0.0.1:$((etcd_port + 1))" \
    --quota-backend-bytes 1073741824
wait_for etcd "http://127.0.0.1:$etcd_port/health" '"health":"true"'

# The service range is only an allocation range: nothing is ever sent there.
launch kube-apiserver kube-apiserver "$bindir/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 --secure-port "$api_port" \
    --insecure-port 0 --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
    --cert-dir "$dir/certs" --service-cluster-ip-range 10.96.0.0/24 \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode AlwaysAllow \
    --disable-admission-plugins ServiceAccount --feature-gates TTLAfterFinished=true \
    --kubelet-preferred-address-types InternalIP
launch kube-proxy-http "kubectl" kubectl --kubeconfig "$dir/admin.kubeconfig" proxy \
    --address 127.0.0.1 --port "$proxy_port" --accept-hosts '^127\.0\.0\.1$|^localhost$'
wait_for kube-apiserver "$probe" "$needle"

# Garbage collection, namespaces and TTL-after-finished are real; the Job controller and
# the kubelet are the test suite's.
launch kube-controller-manager kube-controller-manager "$bindir/kube-controller-manager" \
    --kubeconfig "$dir/admin.kubeconfig" --bind-address 127.0.0.1 --port 0 --secure-port 0 \
    --leader-elect=false --feature-gates TTLAfterFinished=true \
    --controllers '*,-job,-nodelifecycle,-serviceaccount-token,-nodeipam,-cloud-node-lifecycle,-route,-service'
sleep 0.5
running kube-controller-manager kube-controller-manager || {
    log "kube-controller-manager exited; last log lines:"
    tail -n 30 "$dir/kube-controller-manager.log" >&2
    exit 1
}
log "Kubernetes API ready on $proxy_url (server https://127.0.0.1:$api_port)"
finish
