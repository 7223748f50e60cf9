#!/usr/bin/env bash
# Throughput and latency of meshd against wireguard-go, side by side in one run.
#
# Usage (root): bench/throughput.sh [seconds-per-run] [rounds]
#   MESHD=path/to/meshd   (default: target/release/meshd, else target/ci/meshd)
#   MTU=1420              (both implementations get the same MTU)
#
#   CEILING_MBIT=N        the crypto ceiling at $MTU (default: bench/ceiling.sh runs once
#                         first, building meshd's crypto bench with cargo)
#   PREV_MESHD=path       a previous release's meshd, measured in the same rounds
#                         (bench/prev-meshd.sh REV builds one)
#
# Two namespaces on one veth link (198.51.100.1/.2). Each round measures raw veth, then
# meshd (one stream, then 4 parallel streams), the previous meshd if given, then
# wireguard-go (1 and 4 streams), then nebula if installed (A B C A B C ...), each with
# iperf3 TCP for N seconds (with its retransmit count, and ping every 50 ms meanwhile:
# the RTT under load) and an idle ping RTT,
# and prints every sample plus the medians, the meshd / wireguard-go ratio, meshd as a
# percentage of the crypto ceiling (bench/ceiling.sh: boringtun's encapsulation plus
# decapsulation per packet on this machine's cores), and every implementation's CPU
# seconds per GB moved: utime+stime of the tunnel processes of both ends (everything in
# the two namespaces but iperf3 and ping) from /proc/<pid>/stat, read before and after
# the iperf3 run, over the bytes iperf3 received (1 GB = 1e9 bytes). Raw veth has no
# tunnel process: n/a.
set -euo pipefail
T=${1:-5}
ROUNDS=${2:-3}
PREV_MESHD=${PREV_MESHD:-}
source "$(dirname "$0")/tunnel.sh"
find_meshd
need iperf3 wireguard-go wg ping python3
pair_setup wmb

HZ=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime of every process in both namespaces but iperf3 and ping
    local t=0 pid v
    for pid in $(ip netns pids $A) $(ip netns pids $B); do
        case "$(cat /proc/$pid/comm 2>/dev/null)" in iperf3|ping|"") continue ;; esac
        # Fields after the ")" closing comm: state is 3, utime 14 and stime 15.
        v=$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | awk '{print $12 + $13}') || continue
        t=$((t + ${v:-0}))
    done
    echo $t
}
bw() { # $1 = server address, $2 = "cpu" to measure the tunnels' CPU, $3 = parallel streams
       # (default 1); prints Mbit/s, CPU s/GB (or n/a), TCP retransmits and the median ping
       # RTT in ms while the streams run (every 50 ms from 0.5 s in until just before the end)
    ip netns exec $B iperf3 -s -D -1 >/dev/null 2>&1; sleep 0.3
    local before after
    before=$(cpu_ticks)
    local pings=$(( T * 20 - 20 )); [ $pings -ge 5 ] || pings=5
    ( sleep 0.5; ip netns exec $A ping -n -i 0.05 -c $pings "$1" >"$D/loaded.ping" 2>&1 || true ) &
    local pinger=$!
    ip netns exec $A iperf3 -c "$1" -t "$T" -P "${3:-1}" -J 2>/dev/null >"$D/iperf.json"
    after=$(cpu_ticks)
    wait $pinger || true
    python3 - "$D/iperf.json" "${2:-}" "$before" "$after" "$HZ" "$D/loaded.ping" <<'PY'
import json, re, statistics, sys
end = json.load(open(sys.argv[1]))["end"]
d = end["sum_received"]
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / int(sys.argv[5])
per_gb = f"{cpu / (d['bytes'] / 1e9):.2f}" if sys.argv[2] == "cpu" and d["bytes"] else "n/a"
retrans = end["sum_sent"].get("retransmits", 0)
rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", open(sys.argv[6]).read())]
loaded = f"{statistics.median(rtts):.3f}" if rtts else "nan"
print(f"{d['bits_per_second'] / 1e6:.0f} {per_gb} {retrans} {loaded}")
PY
}
rtt() { ip netns exec $A ping -c 20 -i 0.05 -q "$1" | awk -F/ '/rtt/{print $5}'; }
stop_all() { for n in $A $B; do ip netns pids $n | xargs -r kill 2>/dev/null || true; done; sleep 0.5; }

meshd_up() { meshd_pair_up "$@"; }

wggo_up() {
    ip netns exec $A wireguard-go -f wmbga >/dev/null 2>&1 &
    ip netns exec $B wireguard-go -f wmbgb >/dev/null 2>&1 &
    sleep 1
    ip netns exec $A wg set wmbga private-key "$D/a.key" listen-port 51820 peer "$PB" endpoint 198.51.100.2:51820 allowed-ips 10.66.0.2/32
    ip netns exec $B wg set wmbgb private-key "$D/b.key" listen-port 51820 peer "$PA" endpoint 198.51.100.1:51820 allowed-ips 10.66.0.1/32
    ip -n $A addr add 10.66.0.1/24 dev wmbga; ip -n $B addr add 10.66.0.2/24 dev wmbgb
    ip -n $A link set wmbga mtu "$MTU" up; ip -n $B link set wmbgb mtu "$MTU" up
    ip netns exec $A ping -c 2 -W 2 10.66.0.2 >/dev/null
}

nebula_up() { # only when nebula is installed (apt-get install nebula)
    local N="$D/neb"; rm -rf "$N"; mkdir -p "$N"
    (cd "$N" && nebula-cert ca -name bench >/dev/null && nebula-cert sign -name a -ip 10.67.0.1/24 >/dev/null &&
        nebula-cert sign -name b -ip 10.67.0.2/24 >/dev/null) || return 1
    for x in a b; do
        if [ $x = a ]; then oip=10.67.0.2; ounder=198.51.100.2; else oip=10.67.0.1; ounder=198.51.100.1; fi
        cat > "$N/$x.yml" <<Y
pki: {ca: $N/ca.crt, cert: $N/$x.crt, key: $N/$x.key}
static_host_map: {"$oip": ["$ounder:4242"]}
lighthouse: {am_lighthouse: false}
listen: {host: 0.0.0.0, port: 4242}
tun: {dev: wmbn$x, mtu: $MTU}
logging: {level: error}
firewall: {outbound: [{port: any, proto: any, host: any}], inbound: [{port: any, proto: any, host: any}]}
Y
    done
    ip netns exec $A nebula -config "$N/a.yml" >/dev/null 2>&1 &
    ip netns exec $B nebula -config "$N/b.yml" >/dev/null 2>&1 &
    sleep 1.5
    ip netns exec $A ping -c 3 -W 2 10.67.0.2 >/dev/null
}
HAVE_NEBULA=0; command -v nebula >/dev/null && command -v nebula-cert >/dev/null && HAVE_NEBULA=1

echo "# machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# meshd: $MESHD; wireguard-go $(dpkg-query -W -f='${Version}' wireguard-go 2>/dev/null); MTU $MTU; $T s per run; $ROUNDS rounds"
if [ -z "${CEILING_MBIT:-}" ]; then
    MTU=$MTU "$here/bench/ceiling.sh" >"$D/ceiling" || { echo "bench/ceiling.sh failed" >&2; exit 1; }
    grep -v '^ceiling-mbit' "$D/ceiling"
    CEILING_MBIT=$(awk '/^ceiling-mbit/{print $3}' "$D/ceiling")
fi
echo "# crypto ceiling at MTU $MTU: $CEILING_MBIT Mbit/s"
declare -a RAW MESH WGGO MESH_RTT WGGO_RTT NEB MESH_CPU WGGO_CPU NEB_CPU PREV PREV_CPU
declare -a MESH_LRTT WGGO_LRTT MESH_RETR WGGO_RETR MESH4 WGGO4 MESH4_RETR WGGO4_RETR
for r in $(seq 1 "$ROUNDS"); do
    read -r bw_ _ < <(bw 198.51.100.2); RAW+=("$bw_")
    meshd_up
    read -r bw_ cpu_ re_ lr_ < <(bw 10.66.0.2 cpu); MESH+=("$bw_"); MESH_CPU+=("$cpu_")
    MESH_RETR+=("$re_"); MESH_LRTT+=("$lr_")
    read -r bw_ _ re_ _ < <(bw 10.66.0.2 "" 4); MESH4+=("$bw_"); MESH4_RETR+=("$re_")
    MESH_RTT+=("$(rtt 10.66.0.2)"); stop_all
    prev=""
    if [ -n "$PREV_MESHD" ]; then
        meshd_up "$PREV_MESHD"
        read -r bw_ cpu_ _ _ < <(bw 10.66.0.2 cpu); PREV+=("$bw_"); PREV_CPU+=("$cpu_"); stop_all
        prev=" | previous meshd ${PREV[-1]} Mbit/s ${PREV_CPU[-1]} s/GB"
    fi
    wggo_up
    read -r bw_ cpu_ re_ lr_ < <(bw 10.66.0.2 cpu); WGGO+=("$bw_"); WGGO_CPU+=("$cpu_")
    WGGO_RETR+=("$re_"); WGGO_LRTT+=("$lr_")
    read -r bw_ _ re_ _ < <(bw 10.66.0.2 "" 4); WGGO4+=("$bw_"); WGGO4_RETR+=("$re_")
    WGGO_RTT+=("$(rtt 10.66.0.2)"); stop_all
    neb=""
    if [ $HAVE_NEBULA = 1 ]; then
        nebula_up && { read -r bw_ cpu_ _ _ < <(bw 10.67.0.2 cpu); NEB+=("$bw_"); NEB_CPU+=("$cpu_")
            neb=" | nebula ${NEB[-1]} Mbit/s ${NEB_CPU[-1]} s/GB"; }
        stop_all
    fi
    echo "round $r: raw ${RAW[-1]} Mbit/s | meshd ${MESH[-1]} Mbit/s (retr ${MESH_RETR[-1]}, rtt idle" \
        "${MESH_RTT[-1]} / loaded ${MESH_LRTT[-1]} ms, ${MESH_CPU[-1]} s/GB), 4 streams ${MESH4[-1]}" \
        "(retr ${MESH4_RETR[-1]})$prev | wireguard-go ${WGGO[-1]} Mbit/s (retr ${WGGO_RETR[-1]}, rtt idle" \
        "${WGGO_RTT[-1]} / loaded ${WGGO_LRTT[-1]} ms, ${WGGO_CPU[-1]} s/GB), 4 streams ${WGGO4[-1]}" \
        "(retr ${WGGO4_RETR[-1]})$neb"
done
python3 - "${RAW[*]}" "${MESH[*]}" "${WGGO[*]}" "${MESH_RTT[*]}" "${WGGO_RTT[*]}" "${NEB[*]:-}" \
    "${MESH_CPU[*]}" "${WGGO_CPU[*]}" "${NEB_CPU[*]:-}" "$CEILING_MBIT" "${PREV[*]:-}" "${PREV_CPU[*]:-}" \
    "${MESH_LRTT[*]}" "${WGGO_LRTT[*]}" "${MESH_RETR[*]}" "${WGGO_RETR[*]}" "${MESH4[*]}" "${WGGO4[*]}" \
    "${MESH4_RETR[*]}" "${WGGO4_RETR[*]}" <<'PY'
import statistics, sys
a = [[float(x) for x in s.split()] for s in sys.argv[1:]]
raw, mesh, wggo, mrtt, wrtt, neb, mcpu, wcpu, ncpu = a[0:9]
ceiling = a[9][0]
prev, pcpu, mlrtt, wlrtt, mre, wre, mesh4, wggo4, m4re, w4re = a[10:20]
m = statistics.median
rounds = lambda xs, ys, f="{:.2f}": ", ".join(f.format(x / y) for x, y in zip(xs, ys))
print(f"median: raw veth {m(raw):.0f} Mbit/s | meshd {m(mesh):.0f} Mbit/s, rtt {m(mrtt):.3f} ms | "
      f"wireguard-go {m(wggo):.0f} Mbit/s, rtt {m(wrtt):.3f} ms")
print(f"meshd / wireguard-go throughput: {m(mesh)/m(wggo):.2f}x (per round: {rounds(mesh, wggo)})")
if prev:
    print(f"meshd / previous meshd throughput: {m(mesh)/m(prev):.2f}x (per round: {rounds(mesh, prev)}; "
          f"previous median {m(prev):.0f} Mbit/s, {m(pcpu):.2f} CPU s/GB)")
if neb:
    print(f"meshd / nebula throughput: {m(mesh)/m(neb):.2f}x (nebula median {m(neb):.0f} Mbit/s)")
print(f"meshd / crypto ceiling ({ceiling:.0f} Mbit/s): {100 * m(mesh) / ceiling:.0f} % (per round: "
      + ", ".join(f"{100 * x / ceiling:.0f}" for x in mesh) + ")")
print(f"4 streams (aggregate, median): meshd {m(mesh4):.0f} Mbit/s = {m(mesh4)/m(mesh):.2f}x its single stream, "
      f"retransmits {sum(m4re):.0f} over {len(m4re)} runs (single stream: {sum(mre):.0f}) | wireguard-go "
      f"{m(wggo4):.0f} Mbit/s = {m(wggo4)/m(wggo):.2f}x, retransmits {sum(w4re):.0f} (single: {sum(wre):.0f})")
print(f"rtt under load (median of the runs' medians): meshd {m(mlrtt):.3f} ms | wireguard-go "
      f"{m(wlrtt):.3f} ms | meshd / wireguard-go {m(mlrtt)/m(wlrtt):.2f}x; idle: meshd {m(mrtt):.3f} ms, "
      f"wireguard-go {m(wrtt):.3f} ms")
cpu = f"CPU s/GB, both ends (median): raw veth n/a | meshd {m(mcpu):.2f} | wireguard-go {m(wcpu):.2f}"
if pcpu:
    cpu += f" | previous meshd {m(pcpu):.2f}"
if ncpu:
    cpu += f" | nebula {m(ncpu):.2f}"
print(cpu)
PY
