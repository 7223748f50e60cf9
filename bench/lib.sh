# Shared preamble of the benchmarks that run a test with more rounds and print its BENCH
# lines (bench/policy.sh, bench/k8s-pod-network.sh). Source it with the script's
# arguments: sets `here` (the repository, also the working directory), ROUNDS and SECS
# (arguments 1 and 2, default 5 and 5) and `out` (a temporary file removed on exit);
# exits unless root with iperf3.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${1:-5}
SECS=${2:-5}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "missing iperf3 (apt-get install iperf3)" >&2; exit 1; }
cd "$here"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
