#!/usr/bin/env bash
# Side-by-side API benchmark: a 1-master and a 3-master keelson cluster on this machine,
# loaded with `keelson bench api` (HTTPS with the admin certificate, HTTP/2, JSON). There is
# no kube-apiserver here to anchor against, so the comparison is 1 vs 3 masters in one run.
# Rows (each against every master of the cluster, round-robin):
#   create / get / list ConfigMaps with 1 and $MANY clients ($TOTAL requests; list: $LIST_TOTAL
#   LISTs of a namespace holding $LIST_OBJECTS ConfigMaps);
#   list-pods: $PODS Pods, $PODS_TOTAL whole LISTs and $PODS_TOTAL paged ones (limit=500);
#   watch: $WATCHERS watchers, $EVENTS ConfigMaps created at $RATE/s, each delivery timed and
#   checked (every watcher gets every event once, in resourceVersion order).
# The clusters run one after the other (only one is up at a time), on loopback.
#   scripts/bench-api.sh [1|3|both] > bench-api.log
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-both}
TOTAL=${TOTAL:-3000}
MANY=${MANY:-50}
CONNS=${CONNS:-4}
LIST_TOTAL=${LIST_TOTAL:-300}
LIST_OBJECTS=${LIST_OBJECTS:-1000}
PODS=${PODS:-10000}
PODS_TOTAL=${PODS_TOTAL:-10}
WATCHERS=${WATCHERS:-1000}
EVENTS=${EVENTS:-200}
RATE=${RATE:-50}
READY_SECS=${READY_SECS:-60}
. scripts/bench-lib.sh
RESULTS=$WORK/results
: >"$RESULTS"
FAILED=0

row() { # label args... (a failing row is reported and the run goes on)
    local label=$1 rc=0; shift
    "$BIN" bench api --kubeconfig "$KC" --label "$label" "$@" >"$WORK/row.out" || rc=$?
    cat "$WORK/row.out"
    grep '^RESULT ' "$WORK/row.out" | sed 's/^RESULT //' >>"$RESULTS" || true
    if [ "$rc" != 0 ]; then
        echo "# FAILED (exit $rc): $label $*"
        FAILED=1
    fi
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); keelson $("$BIN" --version | awk '{print $2}') ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty'))"
echo "# total=$TOTAL many=$MANY conns=$CONNS list-total=$LIST_TOTAL list-objects=$LIST_OBJECTS pods=$PODS pods-total=$PODS_TOTAL watchers=$WATCHERS events=$EVENTS rate=$RATE/s"
for n in 1 3; do
    [ "$SIZES" = both ] || [ "$SIZES" = "$n" ] || continue
    start_cluster "$n"
    L=keelson-$n
    for c in 1 "$MANY"; do row "$L" --workload create --clients "$c" --conns "$CONNS" --total "$TOTAL"; done
    for c in 1 "$MANY"; do row "$L" --workload get --clients "$c" --conns "$CONNS" --total "$TOTAL"; done
    for c in 1 "$MANY"; do
        row "$L" --workload list --namespace bench-list --objects "$LIST_OBJECTS" --clients "$c" --conns "$CONNS" \
            --total "$LIST_TOTAL"
    done
    row "$L" --workload list-pods --pods "$PODS" --clients 1 --conns "$CONNS" --total "$PODS_TOTAL"
    row "$L" --workload watch --watchers "$WATCHERS" --total "$EVENTS" --rate "$RATE"
    stop_cluster
done

echo
echo "# summary (1 vs 3 masters, same run)"
python3 - "$RESULTS" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
order = []
for r in rows:
    n = r.get("masters")
    if r["workload"] == "watch":
        key = ("watch", f'{r["watchers"]} watchers, {r["total"]} events @ {r["rate"]:g}/s')
    else:
        extra = ""
        if r["workload"].startswith("list-pods"):
            extra = f', {r.get("pods")} pods'
        elif r["workload"] in ("list", "get"):
            extra = f', {r.get("objects")} objs'
        key = (r["workload"], f'{r["clients"]} clients{extra}')
    if key not in by:
        by[key] = {}
        order.append(key)
    by[key][n] = r

def cell(r):
    if r is None:
        return "–", "–", "–"
    if r["workload"] == "watch":
        checks = f'{r["missing"]}/{r["duplicates"]}/{r["out_of_order"]}/{r["watch_errors"]}'
        return (f'{r["deliveries"]}/{r["expected"]} deliveries',
                f'{r["p50_ms"]:.1f} / {r["p99_ms"]:.1f} / {r["max_ms"]:.1f}',
                f'{checks} (create err {r["create_errors"]})')
    t = r["throughput"]
    tp = f'{t:.1f}/s' if t < 100 else f'{t:.0f}/s'
    if "MiB_per_list" in r:
        tp += f' ({r["MiB_per_list"]} MiB)'
    elif "KiB_per_req" in r:
        tp += f' ({r["KiB_per_req"]} KiB)'
    return tp, f'{r["p50_ms"]:.1f} / {r["p99_ms"]:.1f} / {r["max_ms"]:.1f}', str(r["errors"])

print("| workload | load | 1 master: throughput | 1 master: p50 / p99 / max ms | 1 master: errors | 3 masters: throughput | 3 masters: p50 / p99 / max ms | 3 masters: errors |")
print("|---|---|---|---|---|---|---|---|")
for key in order:
    a, b = cell(by[key].get(1)), cell(by[key].get(3))
    print(f"| {key[0]} | {key[1]} | {a[0]} | {a[1]} | {a[2]} | {b[0]} | {b[1]} | {b[2]} |")
print()
print("watch errors column: missing/duplicate/out-of-order deliveries/failed watches; watch latency is create-send to delivery.")
EOF
exit "$FAILED"
