#!/usr/bin/env bash
# Build the Debian package and check what an admin gets from it: every file
# in place with its mode, binaries that run, man pages that render, an
# example configuration that parses. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(scripts/package-deb.sh)
[ -f "$deb" ] || { echo "check-deb: no package built ($deb)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
fail() { echo "check-deb: $*" >&2; exit 1; }
dpkg-deb -f "$deb" Package Version Depends | grep -q '^Depends: .*libc6' || fail "no dependencies declared"
for f in usr/sbin/tandemd usr/sbin/tandemadm usr/lib/ocf/resource.d/tandem/tandem usr/lib/ocf/resource.d/tandem/tandem-nbd \
         etc/ha.d/resource.d/tandemdisk etc/ha.d/resource.d/tandem-nbd; do
  [ -x "$tmp/$f" ] || fail "$f missing or not executable"
done
for f in lib/systemd/system/tandemd.service lib/systemd/system/tandem@.service \
         usr/share/man/man8/tandemadm.8.gz usr/share/man/man8/tandemd.8.gz \
         usr/share/man/man8/tandemadm-connect.8.gz usr/share/doc/tandem/examples/tandem.conf \
         usr/share/bash-completion/completions/tandemadm usr/share/zsh/vendor-completions/_tandemadm \
         usr/share/doc/tandem/guide-mysql-failover.md; do
  [ -f "$tmp/$f" ] || fail "$f missing"
done
[ "$(stat -c %a "$tmp/etc/tandem/tandem.conf")" = 600 ] || fail "the configuration (it holds the secret) is not 0600"
dpkg-deb -I "$deb" conffiles | grep -qx /etc/tandem/tandem.conf || fail "tandem.conf is not a conffile"
"$tmp/usr/sbin/tandemadm" --version | grep -q '^tandemadm ' || fail "tandemadm does not run"
"$tmp/usr/sbin/tandemd" --version | grep -q '^tandemd ' || fail "tandemd does not run"
man -l -P cat "$tmp/usr/share/man/man8/tandemadm-connect.8.gz" 2>/dev/null | grep -q -- --discard-my-data || fail "man page does not render"
# The packaged configuration parses (tandemd reads it, then stops at once
# because node1 has no disk here: the parse is what is checked).
rc=0
out=$("$tmp/usr/sbin/tandemadm" -c "$tmp/etc/tandem/tandem.conf" --node node1 dump-md r0 2>&1) || rc=$?
# 12 is tandemadm's exit status for a configuration error.
[ "$rc" -ne 12 ] || fail "the example configuration does not parse: $out"
case "$out" in *warning*) fail "the example configuration parses with warnings: $out" ;; esac
case "$out" in *"cannot access /dev/sdb1"*) ;; *) fail "unexpected answer for the example configuration: $out" ;; esac
echo "check-deb: $(basename "$deb") ok ($(du -h "$deb" | cut -f1))"
