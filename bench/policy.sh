#!/usr/bin/env bash
# Policy (issue 13): throughput of one TCP stream (iperf3, worker -> control over the
# mesh) under a 100-rule policy against no policy, same run, interleaved A B A B ...;
# and how long a policy change, a tag change and a revocation of an established TCP
# connection take to be in force. Prints the BENCH/POLICY_PROPAGATION lines the tests
# print (tests/tests/policy.rs).
#
# Usage (root): bench/policy.sh [rounds] [seconds-per-run]     (default 5 rounds of 5 s)
#   Needs iperf3 and a built workspace (cargo build --workspace --profile ci).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
WM_POLICY_ROUNDS=$ROUNDS WM_POLICY_SECS=$SECS \
    cargo test -q -p wiremesh-tests --profile ci --test policy -- --nocapture --test-threads 1 \
    bench_throughput_with_a_100_rule_policy tagged_members_reach_exactly_what_the_policy_allows \
    >"$out" 2>&1 || { tail -50 "$out"; exit 1; }
grep -E '^(BENCH|POLICY_PROPAGATION|revocation:)' "$out"
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
