#!/usr/bin/env bash
# Side-by-side store benchmark: keelson vs Debian's etcd 3.4 on this machine, 1 and 3
# members, with `keelson bench store` (etcd v3 protocol) as the one load generator.
# Rows: put 1 client (to the leader; with 3 members also to a follower); put 1000 clients /
# 100 conns; range l and s at 1000/100 (connections spread over all members).
# Each (row, system) runs ROUNDS times; each row runs both systems back to back (order
# alternating by round); each line carries its own fdatasync probe of the data disk.
#   scripts/bench-store.sh [1|3|both] > bench.log
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-both}
ROUNDS=${ROUNDS:-3}
TOTAL=${TOTAL:-100000}
TOTAL1=${TOTAL1:-3000}
. scripts/bench-lib.sh

wait_ready() { # endpoints...
    wait_healthy "$@"
    ETCDCTL_API=3 etcdctl --endpoints "$(IFS=,; echo "$*")" put /bench/ready 1 >/dev/null
}

start_keelson() { # n → sets EPS
    local n=$1 dir=$WORK/keelson-$n cluster="" eps=() peers=() clients=()
    for i in $(seq 1 "$n"); do peers+=("127.0.0.1:$(port)"); clients+=("127.0.0.1:$(port)"); done
    for i in $(seq 1 "$n"); do cluster+="${cluster:+,}m$i=${peers[$((i-1))]}"; done
    for i in $(seq 1 "$n"); do
        KEELSON_LOG=warn "$BIN" server --name "m$i" --data-dir "$dir/m$i" --peer-addr "${peers[$((i-1))]}" \
            --etcd-addr "${clients[$((i-1))]}" --api-addr "127.0.0.1:$(port)" --initial-cluster "$cluster" >/dev/null 2>"$dir-m$i.log" &
        PIDS+=($!)
        eps+=("${clients[$((i-1))]}")
    done
    wait_ready "${eps[@]}"
    EPS=$(IFS=,; echo "${eps[*]}")
}

start_etcd() { # n → sets EPS
    local n=$1 dir=$WORK/etcd-$n cluster="" eps=() peers=() clients=()
    for i in $(seq 1 "$n"); do peers+=("127.0.0.1:$(port)"); clients+=("127.0.0.1:$(port)"); done
    for i in $(seq 1 "$n"); do cluster+="${cluster:+,}e$i=http://${peers[$((i-1))]}"; done
    for i in $(seq 1 "$n"); do
        "$ETCD" --name "e$i" --data-dir "$dir/e$i" \
            --listen-client-urls "http://${clients[$((i-1))]}" --advertise-client-urls "http://${clients[$((i-1))]}" \
            --listen-peer-urls "http://${peers[$((i-1))]}" --initial-advertise-peer-urls "http://${peers[$((i-1))]}" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
            --log-level warn >/dev/null 2>"$dir-e$i.log" &
        PIDS+=($!)
        eps+=("${clients[$((i-1))]}")
    done
    wait_ready "${eps[@]}"
    EPS=$(IFS=,; echo "${eps[*]}")
}

roles() { # endpoints... → "LEADER FOLLOWER"
    local leader="" follower=""
    for ep in "$@"; do
        if is_leader "$ep"; then leader=$ep; else follower=$ep; fi
    done
    [ -n "$leader" ] || { echo "no leader among $*" >&2; exit 1; }
    echo "$leader ${follower:-$leader}"
}

row() { # label endpoints args...
    local label=$1 eps=$2; shift 2
    "$BIN" bench store --endpoints "$eps" --label "$label" --probe-dir "$WORK" "$@"
}

echo "# machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); keelson $("$BIN" --version | awk '{print $2}'); $("$ETCD" --version | head -1)"
echo "# rounds=$ROUNDS total=$TOTAL total-1-client=$TOTAL1 key-size=8 val-size=256 key-space=100000"
for n in 1 3; do
    [ "$SIZES" = both ] || [ "$SIZES" = "$n" ] || continue
    start_keelson "$n"
    K=$EPS
    start_etcd "$n"
    E=$EPS
    echo "# $n member(s): keelson $K ; etcd $E"
    # Roles are looked up once (a leader does not move in an unfaulted run).
    read -r KL KF < <(roles ${K//,/ })
    read -r EL EF < <(roles ${E//,/ })
    for r in $(seq 1 "$ROUNDS"); do
        # Each row runs both systems back to back, first one then the other, alternating
        # by round, so neither always follows the other's heaviest row.
        order="keelson etcd"; [ $((r % 2)) = 0 ] && order="etcd keelson"
        each() { # args for every system: @EPS@, @LEADER@, @FOLLOWER@ substituted
            local sys=$1 suffix=$2; shift 2
            local eps=$K leader=$KL follower=$KF
            [ "$sys" = etcd ] && { eps=$E; leader=$EL; follower=$EF; }
            local args=()
            for a in "$@"; do a=${a//@EPS@/$eps}; a=${a//@LEADER@/$leader}; args+=("${a//@FOLLOWER@/$follower}"); done
            row "$sys-$n$suffix" "${args[@]}"
        }
        # One client: against the leader and, with 3 members, against a follower too.
        for sys in $order; do each "$sys" /leader @LEADER@ --op put --clients 1 --conns 1 --total "$TOTAL1" --key-space-size 100000; done
        if [ "$n" != 1 ]; then
            for sys in $order; do each "$sys" /follower @FOLLOWER@ --op put --clients 1 --conns 1 --total "$TOTAL1" --key-space-size 100000; done
        fi
        # Many clients: connections spread over every member.
        for sys in $order; do each "$sys" "" @EPS@ --op put --clients 1000 --conns 100 --total "$TOTAL" --key-space-size 100000; done
        for sys in $order; do each "$sys" "" @EPS@ --op range --consistency l --clients 1000 --conns 100 --total "$TOTAL"; done
        for sys in $order; do each "$sys" "" @EPS@ --op range --consistency s --clients 1000 --conns 100 --total "$TOTAL"; done
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
done
