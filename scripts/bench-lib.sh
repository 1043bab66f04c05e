# Shared by the bench scripts (sourced, not run): binaries, a work dir that is removed with
# every process started into PIDS on exit, free ports, readiness and leader lookup.
BIN=${KEELSON_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/keelson/target}/release/keelson}
ETCD=${ETCD_BIN:-/usr/bin/etcd}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p keelson (or set KEELSON_BIN)" >&2; exit 1; }
[ -x "$ETCD" ] || { echo "etcd not found at $ETCD (apt-get install etcd-server)" >&2; exit 1; }
WORK=$(mktemp -d /var/tmp/keelson-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port below the kernel's ephemeral range (32768+), where outgoing
# connections take their source ports, so it stays free until the server binds it. The
# next candidate lives in a file because `$(port)` runs in a subshell.
echo $((RANDOM % 12000)) >"$WORK/next-port"
port() {
    local n p
    for _ in $(seq 1 12000); do
        n=$(cat "$WORK/next-port"); echo $(((n + 1) % 12000)) >"$WORK/next-port"
        p=$((20000 + n))
        if python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$p" 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    echo "no free loopback port in 20000..32000" >&2; return 1
}

wait_healthy() { # endpoints... (each answers etcd's health check within ~20 s)
    for ep in "$@"; do
        for _ in $(seq 1 200); do
            ETCDCTL_API=3 etcdctl --endpoints "$ep" --command-timeout=1s endpoint health >/dev/null 2>&1 && break
            sleep 0.1
        done
    done
}

is_leader() { # endpoint (etcd's Maintenance Status, which keelson also serves)
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status -w json |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'
}

# A local keelson cluster (used by bench-api.sh and bench-scheduler.sh); READY_SECS bounds waits.
READY_SECS=${READY_SECS:-60}
wait_api() { # kubeconfig pki-dir masters api-addrs... (each answers with the default namespace)
    local kc=$1 pki=$2 n=$3; shift 3
    local deadline=$((SECONDS + READY_SECS))
    until [ -f "$kc" ] && [ "$(grep -c 'server: https://' "$kc")" -ge "$n" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "no kubeconfig with $n masters at $kc after ${READY_SECS}s" >&2; return 1; }
        sleep 0.2
    done
    for api in "$@"; do
        until curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
            "https://$api/api/v1/namespaces/default" >/dev/null 2>&1; do
            [ "$SECONDS" -lt "$deadline" ] || { echo "the API at $api did not answer within ${READY_SECS}s" >&2; return 1; }
            sleep 0.2
        done
    done
}

start_cluster() { # n → sets KC (the admin kubeconfig of m1, one context per master)
    local n=$1
    local dir=$WORK/keelson-$n cluster="" peers=() etcds=() apis=()
    mkdir -p "$dir"
    for _ in $(seq 1 "$n"); do
        peers+=("127.0.0.1:$(port)")
        etcds+=("127.0.0.1:$(port)")
        apis+=("127.0.0.1:$(port)")
    done
    for i in $(seq 1 "$n"); do cluster+="${cluster:+,}m$i=${peers[$((i - 1))]}"; done
    for i in $(seq 1 "$n"); do
        KEELSON_LOG=warn "$BIN" server --name "m$i" --data-dir "$dir/m$i" --pki-dir "$dir/pki" \
            --peer-addr "${peers[$((i - 1))]}" --etcd-addr "${etcds[$((i - 1))]}" --api-addr "${apis[$((i - 1))]}" \
            --initial-cluster "$cluster" >/dev/null 2>"$dir/m$i.log" &
        PIDS+=($!)
    done
    KC=$dir/m1/admin.kubeconfig
    if ! wait_api "$KC" "$dir/pki" "$n" "${apis[@]}"; then
        for i in $(seq 1 "$n"); do echo "--- m$i log:" >&2; tail -20 "$dir/m$i.log" >&2 || true; done
        exit 1
    fi
    echo "# $n master(s): API ${apis[*]}"
}

stop_cluster() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}

