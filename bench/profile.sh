#!/usr/bin/env bash
# Where meshd's cycles go under one TCP stream (issue 16: "profile first").
#
# Usage (root): bench/profile.sh [seconds] [top-n]
#   MESHD=path/to/meshd   (default: target/release/meshd, else target/ci/meshd; build with
#                          debug info, as the ci profile has, for symbol names)
#   MTU=1420
#
# The two-namespace tunnel of bench/throughput.sh (198.51.100.1/.2, meshd at both ends),
# iperf3 for N seconds, `perf record` of both meshd processes (all their threads) at
# 999 Hz meanwhile. Prints: the throughput, each meshd thread's share of the CPU time
# (from /proc/<pid>/task/*/stat: which thread is the bottleneck), the top symbols by
# self time over both ends, and the same grouped into kernel/crypto/meshd/libc.
set -euo pipefail
T=${1:-8}
TOP=${2:-30}
MTU=${MTU:-1420}
here=$(cd "$(dirname "$0")/.." && pwd)
MESHD=${MESHD:-}
if [ -z "$MESHD" ]; then
    for p in "$here/target/release/meshd" "$here/target/ci/meshd"; do
        [ -x "$p" ] && { MESHD=$p; break; }
    done
fi
[ -x "${MESHD:-}" ] || { echo "build meshd first: cargo build --profile ci -p meshd" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
for tool in iperf3 wg perf python3; do
    command -v $tool >/dev/null || { echo "missing $tool (apt-get install iperf3 wireguard-tools linux-perf)" >&2; exit 1; }
done

id=$$
A=wmp$id-a; B=wmp$id-b
D=$(mktemp -d)
cleanup() {
    for n in $A $B; do ip netns pids $n 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    sleep 0.2
    for n in $A $B; do ip netns del $n 2>/dev/null || true; done
    rm -rf "$D"
}
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add wmp${id}a type veth peer name wmp${id}b
ip link set wmp${id}a netns $A; ip link set wmp${id}b netns $B
ip -n $A addr add 198.51.100.1/24 dev wmp${id}a; ip -n $B addr add 198.51.100.2/24 dev wmp${id}b
for n in $A $B; do ip -n $n link set lo up; done
ip -n $A link set wmp${id}a up; ip -n $B link set wmp${id}b up
umask 077
wg genkey > "$D/a.key"; wg genkey > "$D/b.key"
PA=$(wg pubkey < "$D/a.key"); PB=$(wg pubkey < "$D/b.key")
for x in a b; do
    if [ $x = a ]; then me=1; other=2; peer=$PB; else me=2; other=1; peer=$PA; fi
    cat > "$D/$x.toml" <<T
interface = "wmp$x"
listen-port = 51820
address = "10.66.0.$me/24"
mtu = $MTU
private-key-file = "$D/$x.key"
dns = false
[[peer]]
public-key = "$peer"
endpoint = "198.51.100.$other:51820"
allowed-ips = ["10.66.0.$other/32"]
T
done
MESHD_LOG=warn ip netns exec $A "$MESHD" --config "$D/a.toml" --state-dir "$D/sa" --socket "$D/a.sock" &
MESHD_LOG=warn ip netns exec $B "$MESHD" --config "$D/b.toml" --state-dir "$D/sb" --socket "$D/b.sock" &
sleep 1
ip netns exec $A ping -c 2 -W 2 10.66.0.2 >/dev/null
pids=$(for n in $A $B; do ip netns pids $n; done | tr '\n' ',' | sed 's/,$//')

thread_ticks() { # "pid/tid name ticks" for every meshd thread
    for pid in ${pids//,/ }; do
        for t in /proc/$pid/task/*; do
            printf '%s\t%s\t%s\n' "$pid/${t##*/}" "$(cat "$t/comm")" \
                "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
        done
    done
}
ip netns exec $B iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.3
thread_ticks > "$D/before"
perf record -q -F 999 -g -p "$pids" -o "$D/perf.data" -- sleep "$T" 2>/dev/null &
perf_pid=$!
ip netns exec $A iperf3 -c 10.66.0.2 -t "$T" -J > "$D/iperf.json"
thread_ticks > "$D/after"
wait $perf_pid || true

echo "# machine: $(nproc) cores, $(uname -r); meshd: $MESHD; MTU $MTU; $T s"
python3 - "$D/iperf.json" "$D/before" "$D/after" "$(getconf CLK_TCK)" "$T" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["end"]
print(f"throughput: {d['sum_received']['bits_per_second'] / 1e6:.0f} Mbit/s, "
      f"retransmits {d['sum_sent'].get('retransmits', 'n/a')}")
def load(p):
    out = {}
    for line in open(p):
        key, name, ticks = line.rstrip('\n').split('\t')
        out[key] = (name, int(ticks))
    return out
before, after = load(sys.argv[2]), load(sys.argv[3])
hz, secs = int(sys.argv[4]), float(sys.argv[5])
by_name = {}
for k, (name, t) in after.items():
    used = (t - before.get(k, (name, 0))[1]) / hz
    by_name[name] = by_name.get(name, 0) + used
print("meshd threads, CPU seconds over both ends (share of one core):")
for name, s in sorted(by_name.items(), key=lambda x: -x[1]):
    if s > 0:
        print(f"  {name:<16} {s:6.2f} s  {100 * s / secs:5.1f} %")
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
