#!/usr/bin/env bash
# Builds the two Debian packages and checks them on this machine (root, Debian):
#   wiremesh-node         meshd, meshctl, meshd.service, example config, completions, man pages
#   wiremesh-coordinator  coordinator, coordinator.service, /etc/wiremesh/coordinator.toml
# then installs them with dpkg -i, checks the installed files, runs
# `systemd-analyze verify` on both units, and removes them again with dpkg -r.
#
#   packaging/check.sh            # with the `ci` profile (what .ci/run uses)
#   PROFILE=release packaging/check.sh   # the packages to ship (fat LTO: slow)
#
# Leaves the packages in target/debian/. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-ci}
OUT=target/$PROFILE
DEBS=target/debian

echo "== build ($PROFILE)"
cargo build --profile "$PROFILE" -p meshd -p meshctl -p coordinator

echo "== completions and man pages"
rm -rf "$OUT/completions" "$OUT/man"
mkdir -p "$OUT/completions"
"$OUT/meshctl" completions bash >"$OUT/completions/meshctl.bash"
"$OUT/meshctl" completions zsh >"$OUT/completions/_meshctl"
"$OUT/meshctl" completions fish >"$OUT/completions/meshctl.fish"
"$OUT/meshctl" man "$OUT/man"
gzip -9n "$OUT"/man/*.1

echo "== cargo deb"
rm -rf "$DEBS"
mkdir -p "$DEBS"
# --no-build: wiremesh-node holds binaries of two crates, built above.
cargo deb --no-build --profile "$PROFILE" -p meshd -o "$DEBS/"
cargo deb --no-build --profile "$PROFILE" -p coordinator -o "$DEBS/"
NODE_DEB=$(ls "$DEBS"/wiremesh-node_*.deb)
COORD_DEB=$(ls "$DEBS"/wiremesh-coordinator_*.deb)
ls -l "$NODE_DEB" "$COORD_DEB"

fail() {
    echo "packaging check: $*" >&2
    exit 1
}

# Neither package may start, enable or restart a service in its maintainer scripts.
for deb in "$NODE_DEB" "$COORD_DEB"; do
    ctl=$(mktemp -d)
    dpkg-deb --control "$deb" "$ctl"
    if grep -vhE '^[[:space:]]*#' "$ctl"/*inst "$ctl"/*rm |
        grep -E 'systemctl +(start|restart|enable|try-restart|reload-or-restart)|deb-systemd-invoke|invoke-rc\.d'; then
        fail "$(basename "$deb"): a maintainer script starts, enables or restarts a service"
    fi
    rm -rf "$ctl"
done
ctl=$(mktemp -d)
dpkg-deb --control "$COORD_DEB" "$ctl"
grep -qx /etc/wiremesh/coordinator.toml "$ctl/conffiles" ||
    fail "/etc/wiremesh/coordinator.toml is not a conffile"
rm -rf "$ctl"

cleanup() {
    dpkg -r wiremesh-node wiremesh-coordinator >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "== dpkg -i"
dpkg -i "$NODE_DEB" "$COORD_DEB"

echo "== installed files"
for f in /usr/bin/meshd /usr/bin/meshctl /usr/bin/coordinator; do
    [ -x "$f" ] || fail "$f missing or not executable"
done
for f in /lib/systemd/system/meshd.service /lib/systemd/system/coordinator.service \
    /etc/wiremesh/coordinator.toml /usr/share/doc/wiremesh-node/meshd.toml.example \
    /usr/share/bash-completion/completions/meshctl /usr/share/zsh/vendor-completions/_meshctl \
    /usr/share/fish/vendor_completions.d/meshctl.fish; do
    [ -f "$f" ] || fail "$f missing"
done
ls /usr/share/man/man1/meshctl.1* >/dev/null 2>&1 || fail "meshctl man page missing"
[ ! -e /etc/meshd/meshd.toml ] || [ -n "${KEEP_MESHD_TOML:-}" ] ||
    fail "/etc/meshd/meshd.toml exists: a fresh install must run without a config"
getent passwd wiremesh-coordinator >/dev/null || fail "user wiremesh-coordinator not created"
[ "$(stat -c '%U %a' /var/lib/wiremesh-coordinator)" = "wiremesh-coordinator 700" ] ||
    fail "/var/lib/wiremesh-coordinator: $(stat -c '%U %a' /var/lib/wiremesh-coordinator)"
/usr/bin/meshctl --version
/usr/bin/meshd --version
/usr/bin/coordinator --version
# The shipped coordinator config parses; it only lacks the `advertise` the admin must set.
out=$(/usr/bin/coordinator serve --config /etc/wiremesh/coordinator.toml 2>&1) && fail "coordinator started without advertise"
grep -q -- "--advertise" <<<"$out" || fail "coordinator.toml: $out"

echo "== systemd-analyze verify"
if ! command -v systemd-analyze >/dev/null; then
    apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
# verify loads the units offline (no running systemd needed). It also reports problems
# of other units they pull in (e.g. network-online.target on a container image); only
# lines that name our units count as failures.
for unit in meshd.service coordinator.service; do
    log=$(mktemp)
    rc=0
    systemd-analyze verify "/lib/systemd/system/$unit" >"$log" 2>&1 || rc=$?
    # Errors and warnings about our unit (bad or unknown keys, a missing ExecStart binary
    # or man page) name it; they fail the check even when verify exits 0.
    if grep -E "(^|/)$unit:" "$log" >&2; then
        fail "systemd-analyze verify $unit: see above"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "$unit: verify exited $rc for reasons outside the unit (not a failure):" >&2
        cat "$log" >&2
    else
        echo "$unit: ok"
    fi
    rm -f "$log"
done

echo "== dpkg -r"
dpkg -r wiremesh-node wiremesh-coordinator
for f in /usr/bin/meshd /usr/bin/meshctl /usr/bin/coordinator \
    /lib/systemd/system/meshd.service /lib/systemd/system/coordinator.service; do
    [ ! -e "$f" ] || fail "$f left after dpkg -r"
done
trap - EXIT
echo "packaging check: ok ($NODE_DEB, $COORD_DEB)"
