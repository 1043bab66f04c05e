#!/usr/bin/env bash
# Where the CPU goes: a 3-member keelson and a 3-member etcd 3.4 side by side, puts to
# each leader from `keelson bench store`, and per member the CPU time (user+system, from
# /proc) and context switches (all threads) per put. Rounds alternate the systems.
#   scripts/bench-cpu.sh                      # 1 client, 3000 puts
#   CLIENTS=1000 CONNS=100 TOTAL=50000 scripts/bench-cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-1}
CONNS=${CONNS:-$CLIENTS}
TOTAL=${TOTAL:-3000}
. scripts/bench-lib.sh
TICK=$(getconf CLK_TCK)

declare -A PID_OF  # endpoint -> pid
KEPS=() EEPS=()
kc="" ec=""
kp=() kcl=() ep=() ecl=()
for i in 1 2 3; do kp+=("127.0.0.1:$(port)"); kcl+=("127.0.0.1:$(port)"); ep+=("127.0.0.1:$(port)"); ecl+=("127.0.0.1:$(port)"); done
for i in 1 2 3; do kc+="${kc:+,}m$i=${kp[$((i-1))]}"; ec+="${ec:+,}e$i=http://${ep[$((i-1))]}"; done
for i in 1 2 3; do
    KEELSON_LOG=warn "$BIN" server --name "m$i" --data-dir "$WORK/m$i" --peer-addr "${kp[$((i-1))]}" \
        --etcd-addr "${kcl[$((i-1))]}" --api-addr "127.0.0.1:$(port)" --initial-cluster "$kc" >/dev/null 2>"$WORK/m$i.log" &
    PIDS+=($!); PID_OF[${kcl[$((i-1))]}]=$!; KEPS+=("${kcl[$((i-1))]}")
    "$ETCD" --name "e$i" --data-dir "$WORK/e$i" \
        --listen-client-urls "http://${ecl[$((i-1))]}" --advertise-client-urls "http://${ecl[$((i-1))]}" \
        --listen-peer-urls "http://${ep[$((i-1))]}" --initial-advertise-peer-urls "http://${ep[$((i-1))]}" \
        --initial-cluster "$ec" --initial-cluster-state new --initial-cluster-token cpu \
        --log-level warn >/dev/null 2>"$WORK/e$i.log" &
    PIDS+=($!); PID_OF[${ecl[$((i-1))]}]=$!; EEPS+=("${ecl[$((i-1))]}")
done
wait_healthy "${KEPS[@]}" "${EEPS[@]}"

sample() { # pid -> "ticks ctxsw"
    local t c
    t=$(awk '{print $14+$15}' "/proc/$1/stat")
    c=$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/{s+=$2} END{print s}')
    echo "$t $c"
}

echo "# $(nproc) cores; keelson $("$BIN" --version | awk '{print $2}'); $("$ETCD" --version | head -1); clients=$CLIENTS conns=$CONNS total=$TOTAL"
for r in $(seq 1 "$ROUNDS"); do
    for sys in keelson etcd; do
        if [ $sys = keelson ]; then eps=("${KEPS[@]}"); else eps=("${EEPS[@]}"); fi
        leader=""
        for e in "${eps[@]}"; do is_leader "$e" && leader=$e; done
        [ -n "$leader" ] || { echo "no $sys leader" >&2; exit 1; }
        declare -A before=()
        for e in "${eps[@]}"; do before[$e]=$(sample "${PID_OF[$e]}"); done
        "$BIN" bench store --endpoints "$leader" --clients "$CLIENTS" --conns "$CONNS" --total "$TOTAL" \
            --key-space-size 100000 --probe-dir "$WORK" --label "$sys-3/leader" | cut -d' ' -f1-11
        for e in "${eps[@]}"; do
            read -r t0 c0 <<<"${before[$e]}"
            read -r t1 c1 <<<"$(sample "${PID_OF[$e]}")"
            role=follower; [ "$e" = "$leader" ] && role=leader
            python3 -c "print(f'  $sys $role: {($t1-$t0)*1e6/$TICK/$TOTAL:.0f} us CPU/put, {($c1-$c0)/$TOTAL:.1f} context switches/put')"
        done
    done
done
