#!/usr/bin/env bash
# Does tracing cost requests anything when the collector is gone? One master, the same
# create workload (1 and $MANY clients) side by side with tracing off, with a collector up
# (`keelson bench otlp-sink`, which accepts and counts spans), with the collector down
# (connection refused) and with it black-holed (accepts, never answers: every export times
# out), in interleaved rounds. Every API request is traced (a root span when the
# client sends no traceparent), so each create makes three spans. Prints p50/p99 and
# throughput per configuration, their ratios to "off", and the dropped-span counter.
#   ROUNDS=3 TOTAL=3000 scripts/bench-otlp.sh > bench-otlp.log
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
TOTAL=${TOTAL:-3000}
MANY=${MANY:-50}
READY_SECS=${READY_SECS:-60}
. scripts/bench-lib.sh
RESULTS=$WORK/results
: >"$RESULTS"

# The black hole: a listener that accepts and holds every connection.
HOLE_PORT=$(port)
python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
held = []
while True:
    c, _ = s.accept(); held.append(c)
' "$HOLE_PORT" &
PIDS+=($!)
DOWN_PORT=$(port) # nothing listens here
SINK_PORT=$(port)
"$BIN" bench otlp-sink --addr "127.0.0.1:$SINK_PORT" >"$WORK/sink.log" 2>&1 &
PIDS+=($!)

run_config() { # label [otlp-endpoint]
    local label=$1 endpoint=${2:-} dir=$WORK/$1-$RANDOM api peer etcd pid
    api="127.0.0.1:$(port)"; peer="127.0.0.1:$(port)"; etcd="127.0.0.1:$(port)"
    mkdir -p "$dir"
    local args=(server --name m1 --data-dir "$dir/m1" --pki-dir "$dir/pki" --peer-addr "$peer" --etcd-addr "$etcd"
        --api-addr "$api" --initial-cluster "m1=$peer")
    [ -n "$endpoint" ] && args+=(--otlp-endpoint "$endpoint")
    OTEL_BSP_EXPORT_TIMEOUT=2000 KEELSON_LOG=warn "$BIN" "${args[@]}" >/dev/null 2>"$dir/m1.log" &
    pid=$!
    PIDS+=($pid)
    local deadline=$((SECONDS + READY_SECS))
    until curl -sf --max-time 2 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
        "https://$api/api/v1/namespaces/default" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "the API of '$label' did not answer" >&2; tail -20 "$dir/m1.log" >&2; exit 1; }
        sleep 0.2
    done
    for c in 1 "$MANY"; do
        "$BIN" bench api --kubeconfig "$dir/m1/admin.kubeconfig" --label "$label" --workload create --clients "$c" \
            --conns 4 --total "$TOTAL" >"$WORK/row.out"
        grep '^RESULT ' "$WORK/row.out" | sed 's/^RESULT //' >>"$RESULTS"
    done
    local dropped
    dropped=$(curl -sf --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" --key "$dir/pki/admin.key" \
        "https://$api/metrics" | awk '/^keelson_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
    # A lower bound: spans still queued or in an export when the run ends are not counted yet.
    echo "{\"label\": \"$label\", \"dropped\": $dropped}" >>"$RESULTS"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local kept=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]}") # never signalled again at exit
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); keelson $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "# rounds=$ROUNDS total=$TOTAL creates per row, clients 1 and $MANY; one master"
for r in $(seq 1 "$ROUNDS"); do
    echo "# round $r"
    run_config off
    run_config up "http://127.0.0.1:$SINK_PORT"
    run_config down "http://127.0.0.1:$DOWN_PORT"
    run_config blackhole "http://127.0.0.1:$HOLE_PORT"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by, dropped = {}, {}
for r in rows:
    if "dropped" in r:
        dropped.setdefault(r["label"], []).append(r["dropped"])
        continue
    by.setdefault((r["label"], r["clients"]), []).append(r)
med = lambda rs, k: statistics.median(x[k] for x in rs)
print("\n| config | clients | creates/s (median) | p50 ms | p99 ms | vs off: p50 / p99 / throughput | vs up: p50 / p99 / throughput | spans dropped per run |")
print("|---|---|---|---|---|---|---|---|")
ratio = lambda rs, base: "—" if base is None or rs is base else f'{med(rs, "p50_ms") / med(base, "p50_ms"):.2f}× / {med(rs, "p99_ms") / med(base, "p99_ms"):.2f}× / {med(rs, "throughput") / med(base, "throughput"):.2f}×'
for (label, clients) in sorted(by, key=lambda k: (k[1], ["off", "up", "down", "blackhole"].index(k[0]))):
    rs = by[(label, clients)]
    t, p50, p99 = med(rs, "throughput"), med(rs, "p50_ms"), med(rs, "p99_ms")
    d = ", ".join(str(x) for x in dropped.get(label, []))
    print(f"| {label} | {clients} | {t:.0f} | {p50:.2f} | {p99:.2f} | {ratio(rs, by.get(('off', clients)))} | {ratio(rs, by.get(('up', clients))) if label not in ('off',) else '—'} | {d} |")
PY
