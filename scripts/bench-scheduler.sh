#!/usr/bin/env bash
# The scheduler_perf SchedulingBasic shape on keelson: a fresh cluster of $1 masters (1 or
# 3; controllers and scheduler run on the leader), $NODES simulated nodes (4 CPU, 32 GiB,
# 110 pods; run by the bench process itself), $INIT_PODS warm-up pods, then each of $PODS
# measured pause pods (100m / 500Mi) created by 64 clients. Prints pods scheduled per
# second, create latency, create → bound / Running latency and every master's RSS.
#   scripts/bench-scheduler.sh [1|3] > bench-scheduler.log
set -euo pipefail
cd "$(dirname "$0")/.."
MASTERS=${1:-1}
NODES=${NODES:-5000}
PODS_LIST=${PODS:-"10000 50000"}
INIT_PODS=${INIT_PODS:-1000}
READY_SECS=${READY_SECS:-120}
. scripts/bench-lib.sh
echo "# $(date -u +%FT%TZ) $(nproc) cores; keelson $("$BIN" --version)"
for pods in $PODS_LIST; do
    start_cluster "$MASTERS"
    "$BIN" bench scheduler --kubeconfig "$KC" --nodes "$NODES" --init-pods "$INIT_PODS" --pods "$pods" \
        --master-pid "${PIDS[0]}" --timeout 900s
    for p in "${PIDS[@]}"; do
        echo "# master pid $p: $(grep -E '^(VmRSS|VmHWM)' /proc/"$p"/status | tr -s ' \n' ' ')"
    done
    stop_cluster
done
