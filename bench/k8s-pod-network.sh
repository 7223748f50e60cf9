#!/usr/bin/env bash
# Pod networks over the mesh (issue 14): throughput of one TCP stream (iperf3) between two
# pods on different NAT'd sites (direct path), flannel's vxlan backend over overlay
# addresses against host-gw over approved mesh routes, interleaved A B A B in one run;
# and the MTUs `meshctl k8s` promises (proven by the test with DF pings). Runs the test
# tests/tests/vxlan.rs with more rounds and prints a table from its BENCH lines.
#
# Usage (root): bench/k8s-pod-network.sh [rounds] [seconds-per-run]   (default 5 rounds of 5 s)
#   Needs iperf3 and a built workspace (cargo build --workspace --profile ci).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
WM_PODNET_ROUNDS=$ROUNDS WM_PODNET_SECS=$SECS \
    cargo test -q -p wiremesh-tests --profile ci --test vxlan -- --nocapture --test-threads 1 \
    >"$out" 2>&1 || { tail -50 "$out"; exit 1; }
grep -E '^BENCH pod_network' "$out"
echo
grep -E '^BENCH pod_network ' "$out" | awk '
    { for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      v[f["mode"]] = v[f["mode"]] " " f["mbit"]; n[f["mode"]]++; s[f["mode"], n[f["mode"]]] = f["mbit"] }
    function median(m,   k, j, t, a, c) {
        c = n[m]; for (k = 1; k <= c; k++) a[k] = s[m, k] + 0
        for (k = 1; k <= c; k++) for (j = k + 1; j <= c; j++) if (a[j] < a[k]) { t = a[k]; a[k] = a[j]; a[j] = t }
        return (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
    }
    END {
        printf "%-8s | %-30s | %s\n", "mode", "Mbit/s per round", "median"
        for (m in n) printf "%-8s | %-30s | %.0f\n", m, v[m], median(m)
        if (median("host-gw") > 0) printf "ratio vxlan/host-gw: %.2f\n", median("vxlan") / median("host-gw")
    }'
grep -E '^BENCH pod_network_summary' "$out" | grep -oE '(mesh_mtu|vxlan_mtu|host_gw_mtu|path)=[^ ]+' | tr '\n' ' '
echo
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
