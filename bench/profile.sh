#!/usr/bin/env bash
# Where meshd's cycles go under one TCP stream (issue 16: "profile first").
#
# Usage (root): bench/profile.sh [seconds] [top-n]
#   MESHD=path/to/meshd   (default: target/release/meshd, else target/ci/meshd; build with
#                          debug info, as the ci profile has, for symbol names)
#   MTU=1420
#   CRYPTO_NS_PER_PACKET=N  encap + decap of one packet at $MTU (bench/ceiling.sh's figures):
#                           then also prints the most one stream could reach here if meshd
#                           cost nothing but its crypto and everything else cost what it
#                           does now
#
# The two-namespace tunnel of bench/throughput.sh (198.51.100.1/.2, meshd at both ends),
# iperf3 for N seconds, `perf record` of both meshd processes (all their threads) at
# 999 Hz meanwhile. Prints: the throughput, each meshd thread's share of the CPU time
# (from /proc/<pid>/task/*/stat: which thread is the bottleneck), its user and system time
# per GB (and the bound a meshd spending user time only on crypto would meet), the top symbols by
# self time over both ends, and the same grouped into kernel/crypto/meshd/libc.
set -euo pipefail
T=${1:-8}
TOP=${2:-30}
source "$(dirname "$0")/tunnel.sh"
find_meshd
need iperf3 wg perf python3
pair_setup wmp
meshd_pair_up
pids=$(for n in $A $B; do ip netns pids $n; done | tr '\n' ',' | sed 's/,$//')

thread_ticks() { # "pid/tid name user-ticks system-ticks" for every meshd thread
    for pid in ${pids//,/ }; do
        for t in /proc/$pid/task/*; do
            printf '%s\t%s\t%s\n' "$pid/${t##*/}" "$(cat "$t/comm")" \
                "$(sed 's/.*) //' "$t/stat" | awk '{print $12 "\t" $13}')"
        done
    done
}
sys_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; } # user nice system irq softirq
ip netns exec $B iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.3
sys_before=$(sys_ticks)
thread_ticks > "$D/before"
perf record -q -F 999 -g -p "$pids" -o "$D/perf.data" -- sleep "$T" 2>/dev/null &
perf_pid=$!
ip netns exec $A iperf3 -c 10.66.0.2 -t "$T" -J > "$D/iperf.json"
thread_ticks > "$D/after"
sys_after=$(sys_ticks)
wait $perf_pid || true

echo "# machine: $(nproc) cores, $(uname -r); meshd: $MESHD; MTU $MTU; $T s"
python3 - "$D/iperf.json" "$D/before" "$D/after" "$(getconf CLK_TCK)" "$T" "$sys_before" "$sys_after" \
    "${CRYPTO_NS_PER_PACKET:-}" "$MTU" "$(nproc)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["end"]
gb = d["sum_received"]["bytes"] / 1e9
print(f"throughput: {d['sum_received']['bits_per_second'] / 1e6:.0f} Mbit/s, "
      f"retransmits {d['sum_sent'].get('retransmits', 'n/a')}")
def load(p):
    out = {}
    for line in open(p):
        key, name, user, system = line.rstrip('\n').split('\t')
        out[key] = (name, int(user), int(system))
    return out
before, after = load(sys.argv[2]), load(sys.argv[3])
hz, secs = int(sys.argv[4]), float(sys.argv[5])
by_name = {}
user_s = system_s = 0.0
for k, (name, u, s) in after.items():
    _, u0, s0 = before.get(k, (name, 0, 0))
    by_name[name] = by_name.get(name, 0) + (u - u0 + s - s0) / hz
    user_s += (u - u0) / hz
    system_s += (s - s0) / hz
print("meshd threads, CPU seconds over both ends (share of one core):")
for name, s in sorted(by_name.items(), key=lambda x: -x[1]):
    if s > 0:
        print(f"  {name:<16} {s:6.2f} s  {100 * s / secs:5.1f} %")
# Where the CPU goes per GB: the whole machine (user+nice+system+irq+softirq of
# /proc/stat, everything running: both meshd, both iperf3, the kernel's TCP, veth and
# TUN work in softirq), meshd's threads, and the rest.
machine = (int(sys.argv[7]) - int(sys.argv[6])) / hz
meshd = sum(by_name.values())
print(f"CPU per GB moved: machine {machine / gb:.2f} s, meshd threads {meshd / gb:.2f} s, "
      f"everything else (iperf3, kernel TCP/veth/softirq) {(machine - meshd) / gb:.2f} s; "
      f"machine busy {100 * machine / (secs * int(sys.argv[10])):.0f} % of {sys.argv[10]} cores")
if sys.argv[8]:
    crypto = float(sys.argv[8]) / 1e9 / int(sys.argv[9]) * 1e9  # s per GB of inner packets
    cores = int(sys.argv[10])
    bound = cores / (crypto + (machine - meshd) / gb) * 8
    ceiling = cores / crypto * 8
    print(f"crypto alone {crypto:.2f} s/GB (ceiling {ceiling:.1f} Gbit/s); with everything else as "
          f"measured and meshd costing nothing beyond its crypto: at most {bound:.1f} Gbit/s = "
          f"{100 * bound / ceiling:.0f} % of the ceiling")
    # meshd's system time is the kernel's side of its TUN and UDP syscalls (the copies
    # into and out of the kernel, the TCP/UDP/veth work that runs in its context): what
    # any userspace tunnel with these offloads pays. Only its user time beyond the
    # crypto is meshd's own to cut.
    user, system = user_s / gb, system_s / gb
    own = max(user - crypto, 0.0)
    tight = cores / (crypto + system + (machine - meshd) / gb) * 8
    print(f"meshd threads per GB: user {user:.2f} s (crypto {crypto:.2f}, the rest {own:.2f}), "
          f"system {system:.2f} s")
    print(f"if meshd's user time were its crypto alone (its kernel work and everything else as "
          f"measured): at most {tight:.1f} Gbit/s = {100 * tight / ceiling:.0f} % of the ceiling, "
          f"{tight * 1000 / (d['sum_received']['bits_per_second'] / 1e6):.2f}x this run")
PY
perf report -i "$D/perf.data" --no-children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -n "$TOP" > "$D/top"
echo "top symbols by self time (both ends):"
cat "$D/top"
python3 - "$D/top" <<'PY'
import re, sys
groups = {"kernel": 0.0, "crypto (chacha20poly1305, x25519, blake2s)": 0.0, "memcpy/memmove": 0.0, "other": 0.0}
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    pct, where, sym = float(m.group(1)), m.group(2), m.group(3)
    if re.search(r"memcpy|memmove|copy_user|copy_to|copy_from", sym):
        groups["memcpy/memmove"] += pct
    elif where == "k":
        groups["kernel"] += pct
    elif re.search(r"chacha|poly1305|aead|x25519|blake2|ring_core", sym, re.I):
        groups["crypto (chacha20poly1305, x25519, blake2s)"] += pct
    else:
        groups["other"] += pct
print("grouped (of the symbols above, % of samples):")
for k, v in groups.items():
    print(f"  {k:<44} {v:5.1f} %")
PY
