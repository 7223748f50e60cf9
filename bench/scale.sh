#!/usr/bin/env bash
# Control plane at scale (issue 10): wm-loadgen for N = 100, 1,000, 5,000, 10,000 simulated
# nodes against a real coordinator on loopback, one N after the other; prints each JSON
# report, then a Markdown table with how every figure grows with N, and writes that table
# into BENCHMARKS.md between the `scale:begin`/`scale:end` markers.
#
# Usage: bench/scale.sh [N ...]           (default: 100 1000 5000 10000)
#   LOADGEN=path/to/wm-loadgen            (default: target/release, else target/ci)
#   CHANGES=20                            (admin renames timed per N; each is undone too)
#   TIMEOUT=600                           (seconds any one phase may take)
#   NO_WRITE=1                            (print only, leave BENCHMARKS.md alone)
#   HA=1                                  (issue 11: three coordinators on a three-member
#                                          etcd on loopback, one killed with kill -9 at
#                                          the end; table between the scale-ha markers)
# No root needed: everything is on 127.0.0.1. Needs python3 for the table.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
NS=("$@")
[ ${#NS[@]} -gt 0 ] || NS=(100 1000 5000 10000)
CHANGES=${CHANGES:-20}
TIMEOUT=${TIMEOUT:-600}
LOADGEN=${LOADGEN:-}
if [ -z "$LOADGEN" ]; then
    for p in "$here/target/release/wm-loadgen" "$here/target/ci/wm-loadgen"; do
        [ -x "$p" ] && { LOADGEN=$p; break; }
    done
fi
[ -x "${LOADGEN:-}" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
[ -x "$(dirname "$LOADGEN")/coordinator" ] || { echo "no coordinator beside $LOADGEN" >&2; exit 1; }
command -v python3 >/dev/null || { echo "missing python3 (apt-get install python3)" >&2; exit 1; }

out=$(mktemp)
trap 'rm -f "$out"' EXIT
EXTRA=()
MARK=scale
if [ -n "${HA:-}" ]; then
    command -v etcd >/dev/null || { echo "HA=1 needs etcd (apt-get install etcd-server etcd-client)" >&2; exit 1; }
    EXTRA=(--coordinators 3 --etcd 3 --crash)
    MARK=scale-ha
fi
for n in "${NS[@]}"; do
    echo "== wm-loadgen --nodes $n --changes $CHANGES ${EXTRA[*]}" >&2
    "$LOADGEN" --nodes "$n" --changes "$CHANGES" --timeout "$TIMEOUT" "${EXTRA[@]}" --json | tee -a "$out"
done

machine="$(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
python3 - "$out" "$here/BENCHMARKS.md" "$machine" "$LOADGEN" "${NO_WRITE:-}" "$MARK" "${EXTRA[*]}" "$TIMEOUT" <<'EOF'
import json, math, sys, datetime
path, bench, machine, loadgen, no_write, mark, extra, timeout = sys.argv[1:9]
rows = [json.loads(l) for l in open(path) if l.strip()]
cols = [
    ("full_netmap_s", "full netmap (s)"),
    ("change_p50_ms", "change p50 (ms)"),
    ("change_p99_ms", "change p99 (ms)"),
    ("change_max_ms", "change max (ms)"),
    ("coordinator_rss_mb", "coord. peak RSS (MB)"),
    ("coordinator_cpu_s", "coord. CPU (s)"),
    ("bytes_per_change_per_node", "bytes/change/node"),
    ("udp_bytes_per_change_per_node", "UDP bytes/change/node"),
    ("reconnect_s", "restart (HA: one coordinator killed): all back (s)" if extra else "restart: all back (s)"),
    ("reconnect_full_netmaps", "full maps on reconnect"),
]
lines = []
env = ("HA=1 " if extra else "") + ("TIMEOUT=" + timeout + " " if timeout != "600" else "")
lines.append(f"Machine: {machine}. Command: `{env}bench/scale.sh {' '.join(str(r['nodes']) for r in rows)}` "
             f"({loadgen.split('/target/')[-1] if '/target/' in loadgen else loadgen}), "
             f"{datetime.date.today().isoformat()}.")
lines.append("")
lines.append("| nodes | " + " | ".join(c[1] for c in cols) + " |")
lines.append("|---:|" + "---:|" * len(cols))
for r in rows:
    lines.append(f"| {r['nodes']} | " + " | ".join(str(r.get(k)) for k, _ in cols) + " |")
# Growth: the exponent k in figure ~ N^k between the smallest and the largest N.
if len(rows) >= 2:
    a, b = rows[0], rows[-1]
    growth = []
    for k, _ in cols:
        x, y = a.get(k), b.get(k)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and y > 0:
            growth.append(f"N^{math.log(y / x) / math.log(b['nodes'] / a['nodes']):.2f}")
        else:
            growth.append("-")
    lines.append(f"| growth {a['nodes']}→{b['nodes']} | " + " | ".join(growth) + " |")
lines.append("")
lines.append("Verification (from the reports): " + rows[-1]["verification"] + ".")
table = "\n".join(lines)
print(table)
if not no_write:
    text = open(bench).read()
    begin, end = f"<!-- {mark}:begin -->", f"<!-- {mark}:end -->"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + table + "\n" + end + tail
    else:
        text += "\n" + begin + "\n" + table + "\n" + end + "\n"
    open(bench, "w").write(text)
    print(f"(written into {bench})", file=sys.stderr)
EOF
