#!/usr/bin/env bash
# Pod startup latency on a real node (as root): one keelson master, `keelson agent
# --node-name` on runc with CNI (bridge kbench0, pod CIDR from 10.252.0.0/16), a busybox
# image built by scripts/test-image.sh in Debian's docker-registry on loopback; then
# `keelson bench pod-startup` (create -> Running seen by a watch, $COUNT pods one after
# another and $COUNT at once) and the agent's RSS/CPU idle and with the pods running.
#   scripts/bench-pods.sh > bench-pods.log      # AGENT_ARGS="--event-qps 1 --event-burst 1": more agent flags;
#                                               # AGENT_BIN=…: another keelson for the agent alone (A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-100}
RUNTIME=${RUNTIME:-runc}
. scripts/bench-lib.sh
[ "$(id -u)" -eq 0 ] || { echo "bench-pods.sh: needs root (containers, mounts, network namespaces)" >&2; exit 1; }
echo "# $(date -u +%FT%TZ) $(nproc) cores; keelson $("$BIN" --version); $($RUNTIME --version | head -1)"
BRIDGE=kbench0
NETNS_PREFIX=kbench-
AGENT_ROOT=$WORK/agent
reg_port=$(port)
mkdir -p "$WORK/registry"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$WORK/registry/data" "$reg_port" >"$WORK/registry/config.yml"
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done
scripts/test-image.sh "127.0.0.1:$reg_port" bench/busybox:1 >/dev/null
dir=$WORK/m1
mkdir -p "$dir"
api=127.0.0.1:$(port)
KEELSON_LOG=warn "$BIN" server --name m1 --data-dir "$dir/data" --pki-dir "$dir/pki" \
    --peer-addr "127.0.0.1:$(port)" --etcd-addr "127.0.0.1:$(port)" --api-addr "$api" \
    --cluster-cidr 10.252.0.0/16 >/dev/null 2>"$dir/m1.log" &
PIDS+=($!)
KC=$dir/data/admin.kubeconfig
wait_api "$KC" "$dir/pki" 1 "$api"
undo_node() {
    for id in $("$RUNTIME" --root "$AGENT_ROOT/runtime" list -q 2>/dev/null); do
        "$RUNTIME" --root "$AGENT_ROOT/runtime" delete --force "$id" >/dev/null 2>&1 || true
    done
    for ns in $(ip netns list | awk '{print $1}' | grep "^$NETNS_PREFIX" || true); do ip netns delete "$ns" || true; done
    grep " $AGENT_ROOT" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l || true
    ip link delete "$BRIDGE" 2>/dev/null || true
}
KEELSON_LOG=warn "${AGENT_BIN:-$BIN}" agent --kubeconfig "$KC" --node-name bench-node --root-dir "$AGENT_ROOT" \
    --runtime "$RUNTIME" --bridge "$BRIDGE" --netns-prefix "$NETNS_PREFIX" \
    --insecure-registry "127.0.0.1:$reg_port" ${AGENT_ARGS:-} 2>"$WORK/agent.log" &
AGENT=$!
stop_all() {
    kill "$AGENT" 2>/dev/null || true
    wait "$AGENT" 2>/dev/null || true
    undo_node
    cleanup
}
trap stop_all EXIT
"$BIN" bench pod-startup --kubeconfig "$KC" --node bench-node --image "127.0.0.1:$reg_port/bench/busybox:1" \
    --count "$COUNT" --agent-pid "$AGENT" --agent-root "$AGENT_ROOT"
