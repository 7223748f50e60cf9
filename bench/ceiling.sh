#!/usr/bin/env bash
# The crypto ceiling of one WireGuard tunnel with both ends on this machine (issue 16).
#
# Usage: bench/ceiling.sh
#   CEILING_BENCH=path   a built crypto bench binary (default: built and run by
#                        `cargo bench --profile ci -p meshd --bench crypto`)
#   MTU=1420             also print the ceiling at this MTU (interpolated per byte
#                        between the two measured MTUs when it is neither)
#
# meshd/benches/crypto.rs times boringtun's encapsulation (e) and decapsulation (d) of one
# steady-state data packet of 1280 and 1420 bytes (medians). Model: every packet of the
# tunnel is encrypted once and decrypted once, and nothing else costs anything; the
# machine's N cores do only that, in parallel. One tunnel then carries at most
#     ceiling = N x (MTU x 8 bits) / (e + d)
# (bits of inner IP packets; iperf3's TCP goodput is ~3.7 % less at MTU 1420: IP and TCP
# headers with timestamps). With 2 cores this is also "one core encrypts, the other
# decrypts" when e = d; the script prints that pipeline bound, MTU x 8 / max(e, d), too.
# Real tunnels also pay the TUN, the sockets, the kernel's TCP and iperf3 on the same
# cores, so they stay well below it: quote meshd as a percentage of it.
# The last line is machine-readable: `ceiling-mbit MTU VALUE`.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
MTU=${MTU:-1420}
args=(--sample-count 2000 --sample-size 32)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if [ -n "${CEILING_BENCH:-}" ]; then
    "$CEILING_BENCH" --bench "${args[@]}" >"$out" 2> >(grep -v '^Timer precision' >&2)
else
    (cd "$here" && cargo bench -q --profile ci -p meshd --bench crypto -- "${args[@]}") >"$out" \
        2> >(grep -v '^Timer precision' >&2)
fi
python3 - "$out" "$(nproc)" "$MTU" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
cores, want = int(sys.argv[2]), int(sys.argv[3])
unit = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6}
med, fn = {}, None
for line in text.splitlines():
    m = re.search(r"[├╰]─ (encapsulate|decapsulate)\b", line)
    if m:
        fn = m.group(1)
        continue
    m = re.search(r"[├╰]─ (\d+)\s+(.*)", line)
    if m and fn:
        cols = [c.strip() for c in m.group(2).split("│")]
        v, u = cols[2].split()  # fastest | slowest | median | ...
        med[(fn, int(m.group(1)))] = float(v) * unit[u]
mtus = sorted({k[1] for k in med})
if not mtus or any(("encapsulate", x) not in med or ("decapsulate", x) not in med for x in mtus):
    sys.exit("could not read the benchmark's medians:\n" + text)
def at(fn, mtu):
    if (fn, mtu) in med:
        return med[(fn, mtu)]
    lo, hi = mtus[0], mtus[-1]
    return med[(fn, lo)] + (med[(fn, hi)] - med[(fn, lo)]) * (mtu - lo) / (hi - lo)
print(f"# crypto ceiling: {cores} cores, {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}")
print(f"# model: ceiling = cores x MTU x 8 / (encap + decap); pipeline = MTU x 8 / max(encap, decap)")
rows = mtus + ([want] if want not in mtus else [])
for x in rows:
    e, d = at("encapsulate", x), at("decapsulate", x)
    bits = x * 8
    ceiling = cores * bits / (e + d) * 1e3  # bits/ns -> Mbit/s
    pipe = bits / max(e, d) * 1e3
    note = "" if x in mtus else " (interpolated)"
    print(f"MTU {x}: encap {e:.0f} ns, decap {d:.0f} ns per packet -> ceiling {ceiling:.0f} Mbit/s, "
          f"one core per side {pipe:.0f} Mbit/s{note}")
e, d = at("encapsulate", want), at("decapsulate", want)
print(f"ceiling-mbit {want} {cores * want * 8 / (e + d) * 1e3:.0f}")
PY
