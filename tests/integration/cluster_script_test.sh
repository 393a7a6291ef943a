#!/usr/bin/env bash
# scripts/cluster.sh (issue 14): `up` starts the controller and, per node, an
# engine and a tandem-node that registers itself, and prints the endpoints;
# `down` removes every process and the directory, also after a daemon was
# killed -9, and is safe to run twice.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${TANDEM_BUILD_DIR:?set by ctest}"
for b in replica-engine/service/tandem-engine node-plugin/tandem-node controller/tandem-controller; do
  [ -x "$build/$b" ] || { echo "skip: $build/$b not built"; exit 77; }
done
dir="$(mktemp -d /var/tmp/tandem-cluster-test.XXXXXX)"
rmdir "$dir"
trap '"$root/scripts/cluster.sh" down --dir="$dir" >/dev/null 2>&1 || true' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

out="$("$root/scripts/cluster.sh" up --nodes=3 --dir="$dir" --build="$build")"
echo "$out"
grep -q "^controller_csi=unix://$dir/controller/csi.sock$" <<<"$out" || fail "no controller endpoint line"
for n in 0 1 2; do
  grep -q "^node_n${n}_csi=unix://$dir/n$n/csi.sock$" <<<"$out" || fail "no CSI endpoint of n$n"
  grep -Eq "^node_n${n}_engine=127\.0\.0\.1:[0-9]+$" <<<"$out" || fail "no engine address of n$n"
  [ -S "$dir/n$n/csi.sock" ] || fail "n$n's CSI socket missing"
done
[ "$("$root/scripts/cluster.sh" status --dir="$dir" | grep -c running)" = 7 ] || fail "not 7 daemons running"
pids="$(cat "$dir"/controller/controller.pid "$dir"/n*/engine.pid "$dir"/n*/node.pid)"
# Every tandem-node registers with the controller (bounded wait).
for n in 0 1 2; do
  for _ in $(seq 1 100); do grep -q "node n$n registered" "$dir/n$n/node.log" && break; sleep 0.1; done
  grep -q "node n$n registered" "$dir/n$n/node.log" || fail "n$n did not register"
done
# A crashed engine must not stop `down`.
kill -KILL "$(cat "$dir/n1/engine.pid")"
"$root/scripts/cluster.sh" down --dir="$dir"
[ ! -e "$dir" ] || fail "$dir still exists after down"
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then fail "pid $p still running after down"; fi
done
grep -qF "$dir" /proc/mounts && fail "a mount under $dir remains"
"$root/scripts/cluster.sh" down --dir="$dir" || fail "a second down failed"
echo "PASS"
