#!/usr/bin/env python3
"""Summarise scripts/bench-store.sh output: per (row, members) the median throughput and
p50/p99 over rounds for keelson and etcd, and the keelson/etcd ratio, as a markdown table.
    python3 scripts/bench-summary.py bench.log
"""
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^(?P<sys>keelson|etcd)-(?P<n>\d+)(?:/(?P<role>\w+))? op=(?P<op>\S+) clients=(?P<clients>\d+) conns=(?P<conns>\d+) .*?"
                  r"errors=(?P<errors>\d+) .*?throughput=(?P<tput>[\d.]+)/s p50=(?P<p50>[\d.]+)ms p99=(?P<p99>[\d.]+)ms"
                  r".*?fsync-before=(?P<fs>[\d.]+)/s")

rows = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    m = LINE.match(line.strip())
    if not m:
        continue
    key = (int(m["n"]), m["op"], int(m["clients"]), int(m["conns"]), m["role"] or "all")
    rows[key][m["sys"]].append(m)

def med(ms, f):
    return statistics.median(float(x[f]) for x in ms)

print("| members | op | clients/conns | to | keelson ops/s | etcd ops/s | ratio | keelson p50 / p99 ms | etcd p50 / p99 ms | p50 ratio (k/e) | errors k/e | fsync/s (median probe) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows, key=lambda k: (k[0], k[2], k[1], k[4])):
    n, op, clients, conns, role = key
    k, e = rows[key].get("keelson", []), rows[key].get("etcd", [])
    if not k or not e:
        continue
    kt, et = med(k, "tput"), med(e, "tput")
    kp50, ep50 = med(k, "p50"), med(e, "p50")
    errs = f'{sum(int(x["errors"]) for x in k)}/{sum(int(x["errors"]) for x in e)}'
    fs = statistics.median(float(x["fs"]) for x in k + e)
    print(f"| {n} | {op} | {clients}/{conns} | {role} | {kt:.0f} | {et:.0f} | {kt / et:.2f}x | {kp50:.2f} / {med(k, 'p99'):.2f} | "
          f"{ep50:.2f} / {med(e, 'p99'):.2f} | {kp50 / ep50:.2f} | {errs} | {fs:.0f} |")
