#!/usr/bin/env bash
# scripts/cluster.sh (issue 14): `up` starts the controller and, per node, an
# engine and a tandem-node that registers itself, and prints the endpoints;
# `restart-engine` brings a killed engine back on its ports; `down` removes
# every process, mount, loop device and the directory, also with a volume
# mounted and after daemons were killed -9, and is safe to run twice; the same
# with --netns (a network namespace per node), whose namespaces `down` deletes.
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
# A killed engine comes back on its old ports.
port1="$(cat "$dir/n1/data_port")" pid1="$(cat "$dir/n1/engine.pid")"
kill -KILL "$pid1"
for _ in $(seq 1 50); do kill -0 "$pid1" 2>/dev/null || break; sleep 0.1; done
"$root/scripts/cluster.sh" restart-engine --node=n1 --dir="$dir" --build="$build"
[ "$(cat "$dir/n1/data_port")" = "$port1" ] || fail "n1's engine restarted on another port"
[ "$("$root/scripts/cluster.sh" status --dir="$dir" | grep -c running)" = 7 ] || fail "not 7 daemons after restart-engine"
pids="$pids $(cat "$dir/n1/engine.pid")"
# A volume mounted on n0 (through CSI, when tandem-kubelet is built), then
# crashes: `down` must still unmount it and detach its loop device.
kubelet="$build/tests/harness/tandem-kubelet"
if [ -x "$kubelet" ]; then
  ctl="unix://$dir/controller/csi.sock"
  vol=""
  for _ in $(seq 1 50); do
    vol="$("$kubelet" create --controller="$ctl" --name=v --size=64M 2>"$dir/create.err")" && break
    sleep 0.2
  done
  [ -n "$vol" ] || fail "CreateVolume through the cluster failed: $(cat "$dir/create.err")"
  mnt="$("$kubelet" attach --controller="$ctl" --node="unix://$dir/n0/csi.sock" --node-id=n0 \
    --kubelet-dir="$dir/n0/kubelet" --volume="$vol" --pod=p)"
  echo data >"$mnt/file"
  grep -qF "$dir/n0/kubelet" /proc/mounts || fail "the volume is not mounted"
  grep -qF "($dir/" <<<"$(losetup -a)" || fail "no loop device over the volume's export"
  kill -KILL "$(cat "$dir/n0/node.pid")"
fi
# A crashed engine must not stop `down`.
kill -KILL "$(cat "$dir/n1/engine.pid")"
"$root/scripts/cluster.sh" down --dir="$dir"
[ ! -e "$dir" ] || fail "$dir still exists after down"
for p in $pids; do
  if kill -0 "$p" 2>/dev/null; then fail "pid $p still running after down"; fi
done
grep -qF "$dir" /proc/mounts && fail "a mount under $dir remains"
grep -qF "($dir/" <<<"$(losetup -a)" && fail "a loop device over a file under $dir remains"
"$root/scripts/cluster.sh" down --dir="$dir" || fail "a second down failed"

# --netns: each node in its own network namespace on 10.77.0.0/24, joined
# through a hub namespace; a volume replicated across them mounts; `down`
# deletes the namespaces and leaves the host's links as they were.
if ! ip netns add tandem-netns-probe-$$ 2>/dev/null; then
  echo "PASS (--netns skipped: cannot create network namespaces here)"
  exit 0
fi
ip netns del tandem-netns-probe-$$
links_before="$(ip -o link | wc -l)"
out="$("$root/scripts/cluster.sh" up --netns --nodes=3 --dir="$dir" --build="$build")"
echo "$out"
for n in 0 1 2; do
  grep -q "^node_n${n}_engine=10\.77\.0\.1$n:[0-9]*$" <<<"$out" || fail "n$n's engine is not on 10.77.0.1$n"
  ns="$(sed -n "s/^node_n${n}_netns=//p" <<<"$out")"
  # (Outputs captured first: grep -q closing a pipe early fails it under pipefail.)
  nslist="$(ip netns list)" addrs="$(ip -n "$ns" -o addr show dev eth0)"
  [ -n "$ns" ] && grep -q "^$ns " <<<"$nslist" || fail "no network namespace for n$n"
  grep -q "10\.77\.0\.1$n/24" <<<"$addrs" || fail "n$n's eth0 has no 10.77.0.1$n"
done
host_addrs="$(ip -o addr)"
grep -q "10\.77\.0\." <<<"$host_addrs" && fail "a 10.77.0.x address is in the host's namespace"
if [ -x "$kubelet" ]; then
  ctl="unix://$dir/controller/csi.sock"
  vol=""
  for _ in $(seq 1 50); do
    vol="$("$kubelet" create --controller="$ctl" --name=v --size=64M 2>"$dir/create.err")" && break
    sleep 0.2
  done
  [ -n "$vol" ] || fail "CreateVolume across namespaces failed: $(cat "$dir/create.err")"
  mnt="$("$kubelet" attach --controller="$ctl" --node="unix://$dir/n2/csi.sock" --node-id=n2 \
    --kubelet-dir="$dir/n2/kubelet" --volume="$vol" --pod=p)"
  echo data >"$mnt/file" && sync -f "$mnt" || fail "writing the volume mounted across namespaces"
  h="$("$kubelet" health --controller="$ctl" --volume="$vol")"
  grep -q "abnormal=false HEALTHY: 3 of 3" <<<"$h" || fail "the volume is not healthy across namespaces: $h"
fi
nss="$(sed -n 's/^node_n[0-9]_netns=//p' <<<"$out")"
"$root/scripts/cluster.sh" down --dir="$dir"
nslist="$(ip netns list)"
for ns in $nss; do grep -q "^$ns " <<<"$nslist" && fail "namespace $ns remains after down"; done
grep -q "^${nss%%-n0*}-hub " <<<"$nslist" && fail "the hub namespace remains after down"
[ "$(ip -o link | wc -l)" = "$links_before" ] || fail "host links changed: $(ip -o link | wc -l) vs $links_before"
grep -qF "$dir" /proc/mounts && fail "a mount under $dir remains"
echo "PASS"
