#!/usr/bin/env bash
# Builds a previous release's meshd for bench/throughput.sh's PREV_MESHD (issue 16's
# "≥ 1.5x the previous release binary, measured in the same run").
#
# Usage: bench/prev-meshd.sh [REV]   (default 0896d00: the release issue 16 was filed
#                                     against, stop 21; its data plane is "today's meshd")
# Checks REV out into a temporary worktree, builds meshd with the ci profile (what the
# current meshd is measured with) into target/prev-REV/, removes the worktree, and prints
# the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
REV=${1:-0896d00}
out="$here/target/prev-$REV"
bin="$out/ci/meshd"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
wt=$(mktemp -d)
trap 'git -C "$here" worktree remove --force "$wt" >/dev/null 2>&1 || rm -rf "$wt"' EXIT
git -C "$here" worktree add --detach "$wt" "$REV" >/dev/null 2>&1
(cd "$wt" && cargo build -q --profile ci -p meshd --target-dir "$out") >&2
echo "$bin"
