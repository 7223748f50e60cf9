#!/usr/bin/env bash
# Policy at scale (issue 13): the control-plane scale run (wm-loadgen, simulated nodes on
# loopback against a real coordinator) for the full mesh and for the same N split into
# groups by a deny-by-default policy (a member may reach only its own group), one after
# the other in the same session. Prints each JSON report and a table: peers per node,
# control bytes per node over the cold start (netmaps, changes and, with the policy,
# filters), time until every node held its full netmap, the coordinator's peak RSS and CPU.
#
# Usage: bench/policy-scale.sh [N] [GROUPS...]     (default: 10000 10)
#   LOADGEN=path/to/wm-loadgen   (default: target/release, else target/ci)
# No root needed. Needs python3 for the table.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-10000}
shift || true
GROUPS_LIST=("$@")
[ ${#GROUPS_LIST[@]} -gt 0 ] || GROUPS_LIST=(10)
LOADGEN=${LOADGEN:-}
if [ -z "$LOADGEN" ]; then
    for p in "$here/target/release/wm-loadgen" "$here/target/ci/wm-loadgen"; do
        [ -x "$p" ] && { LOADGEN=$p; break; }
    done
fi
[ -x "${LOADGEN:-}" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "full mesh, $N nodes" >&2
"$LOADGEN" --nodes "$N" --changes 1 --no-restart --json --timeout 900 | tee -a "$out"
for g in "${GROUPS_LIST[@]}"; do
    echo "$g groups, $N nodes" >&2
    "$LOADGEN" --nodes "$N" --groups "$g" --json --timeout 900 | tee -a "$out"
done
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
full = rows[0]
print()
print("| nodes | policy | peers/node | netmap bytes/node, cold start | vs full mesh | all control bytes/node (with filters) | vs full mesh | full netmaps (s) | vs full mesh | coord. peak RSS (MB) | coord. CPU (s) |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    pol = "none (full mesh)" if r["groups"] == 0 else f'{r["groups"]} groups'
    print(f'| {r["nodes"]} | {pol} | {r["peers_per_node"]:.0f} | {r["cold_netmap_bytes_per_node"]:.0f} | '
          f'{r["cold_netmap_bytes_per_node"]/full["cold_netmap_bytes_per_node"]:.3f}x | {r["cold_bytes_per_node"]:.0f} | '
          f'{r["cold_bytes_per_node"]/full["cold_bytes_per_node"]:.3f}x | {r["full_netmap_s"]:.2f} | '
          f'{r["full_netmap_s"]/full["full_netmap_s"]:.2f}x | {r["coordinator_rss_mb"]:.0f} | {r["coordinator_cpu_s"]:.1f} |')
PY
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
