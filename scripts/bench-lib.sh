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
