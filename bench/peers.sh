#!/usr/bin/env bash
# Four peers at once (issue 16): one node sends to four peers concurrently, against one
# stream to one peer, meshd and wireguard-go side by side in one run.
#
# Usage (root): bench/peers.sh [seconds-per-run] [rounds]
#   MESHD=path/to/meshd   (default: target/release/meshd, else target/ci/meshd)
#   MTU=1420
#
# Five namespaces on one bridge (in a sixth): a = 198.51.100.1, b1..b4 = .11-.14, overlay
# 10.66.0.1 and .11-.14. Each round, for meshd then wireguard-go: iperf3 from a to b1 for
# N seconds (one stream), then from a to b1..b4 at once (one stream each, for N seconds);
# prints each figure with iperf3's retransmit count and, at the end, the medians and the
# aggregate / single-stream ratio per implementation.
set -euo pipefail
T=${1:-5}
ROUNDS=${2:-3}
source "$(dirname "$0")/tunnel.sh"
find_meshd
need iperf3 wireguard-go wg python3

id=$$
S=wmq$id-s
NODES=(a b1 b2 b3 b4)
declare -A HOST=([a]=1 [b1]=11 [b2]=12 [b3]=13 [b4]=14)
ns() { echo "wmq$id-$1"; }
D=$(mktemp -d)
cleanup() {
    for n in "${NODES[@]}"; do ip netns pids "$(ns $n)" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    sleep 0.2
    for n in "${NODES[@]}"; do ip netns del "$(ns $n)" 2>/dev/null || true; done
    ip netns del $S 2>/dev/null || true
    rm -rf "$D"
}
trap cleanup EXIT
ip netns add $S
ip -n $S link add br0 type bridge; ip -n $S link set br0 up
umask 077
for n in "${NODES[@]}"; do
    ip netns add "$(ns $n)"
    ip -n "$(ns $n)" link add eth0 type veth peer name "v$n" netns $S
    ip -n $S link set "v$n" master br0; ip -n $S link set "v$n" up
    ip -n "$(ns $n)" addr add "198.51.100.${HOST[$n]}/24" dev eth0
    ip -n "$(ns $n)" link set eth0 up; ip -n "$(ns $n)" link set lo up
    wg genkey > "$D/$n.key"; wg pubkey < "$D/$n.key" > "$D/$n.pub"
done
peers_of() { if [ "$1" = a ]; then echo b1 b2 b3 b4; else echo a; fi; }

meshd_up() {
    for n in "${NODES[@]}"; do
        {
            printf 'interface = "wmq%s"\nlisten-port = 51820\naddress = "10.66.0.%s/24"\nmtu = %s\n' \
                "$n" "${HOST[$n]}" "$MTU"
            printf 'private-key-file = "%s"\ndns = false\n' "$D/$n.key"
            for p in $(peers_of $n); do
                printf '[[peer]]\npublic-key = "%s"\nendpoint = "198.51.100.%s:51820"\nallowed-ips = ["10.66.0.%s/32"]\n' \
                    "$(cat "$D/$p.pub")" "${HOST[$p]}" "${HOST[$p]}"
            done
        } > "$D/$n.toml"
        MESHD_LOG=warn ip netns exec "$(ns $n)" "$MESHD" --config "$D/$n.toml" \
            --state-dir "$D/s$n" --socket "$D/$n.sock" &
    done
    sleep 1
    for p in b1 b2 b3 b4; do ip netns exec "$(ns a)" ping -c 2 -W 2 "10.66.0.${HOST[$p]}" >/dev/null; done
}

wggo_up() {
    for n in "${NODES[@]}"; do
        ip netns exec "$(ns $n)" wireguard-go -f "wmg$n" >/dev/null 2>&1 &
    done
    sleep 1
    for n in "${NODES[@]}"; do
        local args=()
        for p in $(peers_of $n); do
            args+=(peer "$(cat "$D/$p.pub")" endpoint "198.51.100.${HOST[$p]}:51820" allowed-ips "10.66.0.${HOST[$p]}/32")
        done
        ip netns exec "$(ns $n)" wg set "wmg$n" private-key "$D/$n.key" listen-port 51820 "${args[@]}"
        ip -n "$(ns $n)" addr add "10.66.0.${HOST[$n]}/24" dev "wmg$n"
        ip -n "$(ns $n)" link set "wmg$n" mtu "$MTU" up
    done
    for p in b1 b2 b3 b4; do ip netns exec "$(ns a)" ping -c 2 -W 2 "10.66.0.${HOST[$p]}" >/dev/null; done
}

stop_all() {
    for n in "${NODES[@]}"; do ip netns pids "$(ns $n)" | xargs -r kill 2>/dev/null || true; done
    sleep 0.5
}

# iperf3 from a to each peer given, all at once; prints the sum of Mbit/s and retransmits.
streams() {
    local p
    for p in "$@"; do ip netns exec "$(ns $p)" iperf3 -s -D -1 >/dev/null 2>&1; done
    sleep 0.3
    for p in "$@"; do
        ip netns exec "$(ns a)" iperf3 -c "10.66.0.${HOST[$p]}" -t "$T" -J >"$D/$p.json" 2>/dev/null &
    done
    wait
    python3 - "$D" "$@" <<'PY'
import json, sys
total = retr = 0
for p in sys.argv[2:]:
    end = json.load(open(f"{sys.argv[1]}/{p}.json"))["end"]
    total += end["sum_received"]["bits_per_second"] / 1e6
    retr += end["sum_sent"].get("retransmits", 0)
print(f"{total:.0f} {retr}")
PY
}

echo "# machine: $(nproc) cores, $(uname -r); meshd: $MESHD; wireguard-go $(dpkg-query -W -f='${Version}' wireguard-go 2>/dev/null); MTU $MTU; $T s per run; $ROUNDS rounds"
declare -a M1 M4 W1 W4 M1R M4R W1R W4R
for r in $(seq 1 "$ROUNDS"); do
    meshd_up
    read -r bw re < <(streams b1); M1+=("$bw"); M1R+=("$re")
    read -r bw re < <(streams b1 b2 b3 b4); M4+=("$bw"); M4R+=("$re")
    stop_all
    wggo_up
    read -r bw re < <(streams b1); W1+=("$bw"); W1R+=("$re")
    read -r bw re < <(streams b1 b2 b3 b4); W4+=("$bw"); W4R+=("$re")
    stop_all
    echo "round $r: meshd 1 peer ${M1[-1]} Mbit/s (retr ${M1R[-1]}), 4 peers ${M4[-1]} Mbit/s (retr ${M4R[-1]}) |" \
        "wireguard-go 1 peer ${W1[-1]} Mbit/s (retr ${W1R[-1]}), 4 peers ${W4[-1]} Mbit/s (retr ${W4R[-1]})"
done
python3 - "${M1[*]}" "${M4[*]}" "${W1[*]}" "${W4[*]}" "${M1R[*]}" "${M4R[*]}" "${W1R[*]}" "${W4R[*]}" <<'PY'
import statistics, sys
m1, m4, w1, w4, m1r, m4r, w1r, w4r = ([float(x) for x in a.split()] for a in sys.argv[1:9])
m = statistics.median
print(f"median: meshd 1 peer {m(m1):.0f} Mbit/s, 4 peers {m(m4):.0f} Mbit/s = {m(m4)/m(m1):.2f}x "
      f"(retransmits {sum(m1r):.0f} / {sum(m4r):.0f}) | wireguard-go 1 peer {m(w1):.0f}, 4 peers {m(w4):.0f} = "
      f"{m(w4)/m(w1):.2f}x (retransmits {sum(w1r):.0f} / {sum(w4r):.0f})")
print(f"meshd / wireguard-go, 4 peers: {m(m4)/m(w4):.2f}x")
PY
