# Shared by bench/throughput.sh, bench/profile.sh and bench/peers.sh (sourced): which
# meshd to measure, the root and tool checks, and the two-namespace tunnel.
#
#   find_meshd              sets MESHD: $MESHD, else target/release/meshd, else target/ci/meshd
#   need TOOL...            exits unless root with every TOOL installed
#   pair_setup PREFIX       namespaces A=PREFIX$$-a and B=PREFIX$$-b on one veth
#                           (198.51.100.1/.2), keys in D (a temporary directory) with
#                           public keys PA and PB; everything removed on exit
#   meshd_pair_up [BIN]     meshd (BIN, default $MESHD) at both ends, interfaces PREFIXa
#                           and PREFIXb, overlay 10.66.0.1/.2, MTU $MTU; returns once a
#                           ping crosses
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MTU=${MTU:-1420}

find_meshd() {
    MESHD=${MESHD:-}
    if [ -z "$MESHD" ]; then
        for p in "$here/target/release/meshd" "$here/target/ci/meshd"; do
            [ -x "$p" ] && { MESHD=$p; break; }
        done
    fi
    [ -x "${MESHD:-}" ] || { echo "build meshd first: cargo build --profile ci -p meshd" >&2; exit 1; }
}

need() {
    [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "missing $tool (apt-get install iperf3 wireguard-go wireguard-tools iputils-ping linux-perf)" >&2
            exit 1
        }
    done
}

pair_setup() {
    PREFIX=$1
    A=$PREFIX$$-a; B=$PREFIX$$-b
    D=$(mktemp -d)
    trap pair_cleanup EXIT
    ip netns add "$A"; ip netns add "$B"
    ip link add "$PREFIX$$a" type veth peer name "$PREFIX$$b"
    ip link set "$PREFIX$$a" netns "$A"; ip link set "$PREFIX$$b" netns "$B"
    ip -n "$A" addr add 198.51.100.1/24 dev "$PREFIX$$a"; ip -n "$B" addr add 198.51.100.2/24 dev "$PREFIX$$b"
    local n
    for n in "$A" "$B"; do ip -n "$n" link set lo up; done
    ip -n "$A" link set "$PREFIX$$a" up; ip -n "$B" link set "$PREFIX$$b" up
    umask 077
    wg genkey > "$D/a.key"; wg genkey > "$D/b.key"
    PA=$(wg pubkey < "$D/a.key"); PB=$(wg pubkey < "$D/b.key")
}

pair_cleanup() {
    local n
    for n in "$A" "$B"; do ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    sleep 0.2
    for n in "$A" "$B"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$D"
}

meshd_pair_up() {
    local bin=${1:-$MESHD} x me other peer
    for x in a b; do
        if [ $x = a ]; then me=1; other=2; peer=$PB; else me=2; other=1; peer=$PA; fi
        cat > "$D/$x.toml" <<T
interface = "$PREFIX$x"
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
    MESHD_LOG=warn ip netns exec "$A" "$bin" --config "$D/a.toml" --state-dir "$D/sa" --socket "$D/a.sock" &
    MESHD_LOG=warn ip netns exec "$B" "$bin" --config "$D/b.toml" --state-dir "$D/sb" --socket "$D/b.sock" &
    sleep 1
    ip netns exec "$A" ping -c 2 -W 2 10.66.0.2 >/dev/null
}
