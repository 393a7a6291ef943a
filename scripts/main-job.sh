#!/usr/bin/env bash
# The main job (README): the CSI story on a local cluster (scripts/cluster.sh:
# tandem-controller and three simulated nodes, each a tandem-engine and a
# tandem-node), driven by a kubelet-like client (tests/harness' tandem-kubelet)
# with the calls and paths Kubernetes uses. As root, on one machine:
#   1. installs missing packages, builds Release, starts the cluster,
#   2. provisions a 3-replica volume (CreateVolume), stages and publishes it
#      on node n0 (ext4, mounted: the engine's FUSE file export + a loop device),
#   3. writes 48 files and fsyncs them, runs a short fio (io_uring, 4 KiB
#      random writes, verify=crc32c) on the mounted filesystem,
#   4. kills -9 the tandem-engine of node n2 (a replica) while fio writes:
#      fio goes on without an error and the volume's health (the controller's
#      and the node's VolumeCondition) turns DEGRADED naming the FAULTED replica,
#   5. restarts that engine: the target rebuilds it (progress bar), health is
#      HEALTHY again,
#   6. fails the mounted volume over: kill -9 of n0's engine and tandem-node,
#      forced ControllerUnpublish, stage and publish on n1 at once; every
#      fsync'd byte is checked there,
#   7. removes every process, mount, loop device and file (also on Ctrl-C).
#
#   scripts/main-job.sh [--fio-seconds=N]
#   scripts/main-job.sh --engine [...]          the engine-level job (NBD, ack verifier,
#                                              replica benchmark): scripts/engine-job.sh
#   scripts/main-job.sh --replica-bench [...]   bench/replica_bench (scripts/engine-job.sh)
#
# Exit status 0 only if every check passed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
case "${1:-}" in
  --engine) shift; exec "$root/scripts/engine-job.sh" "$@" ;;
  --replica-bench) exec "$root/scripts/engine-job.sh" "$@" ;;
esac
fio_seconds=12
for arg in "$@"; do
  case "$arg" in
    --fio-seconds=*) fio_seconds="${arg#*=}" ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "main-job: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "main-job: needs root (mounts, loop devices, FUSE)" >&2; exit 1; }

out="${TANDEM_BUILD_ROOT:-$root/build}/release"
"$root/scripts/install-deps.sh"
cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_TESTS=ON >/dev/null
cmake --build "$out" -j"${TANDEM_JOBS:-2}" --target tandem-engine tandem-node tandem-controller \
  tandemctl tandem-kubelet
KUBELET="$out/tests/harness/tandem-kubelet"
TANDEMCTL="$out/tools/tandemctl/tandemctl"

run="$(mktemp -d /var/tmp/tandem-main-job.XXXXXX)"
cluster="$run/cluster"
fio_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # (No bare `a && b` here: under set -e a failing last command would end
  # the cleanup before the cluster is down.)
  if [ -n "$fio_pid" ]; then
    kill "$fio_pid" 2>/dev/null || true
    wait "$fio_pid" 2>/dev/null || true
  fi
  "$root/scripts/cluster.sh" down --dir="$cluster" >/dev/null 2>&1 || true
  rm -rf "$run"
  [ "$rc" = 0 ] || echo "main-job: FAILED (exit $rc); everything it started is removed" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "main-job: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM
say() { echo; echo "== $* =="; }
fail() { echo "main-job: $*" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

say "1. local cluster: tandem-controller + nodes n0 n1 n2 (tandem-engine + tandem-node each)"
"$root/scripts/cluster.sh" up --dir="$cluster" --build="$out" | tee "$run/endpoints"
ep() { sed -n "s/^$1=//p" "$run/endpoints"; }
ctl_ep="$(ep controller_csi)"
k() {  # k NODE COMMAND FLAGS...: tandem-kubelet for node NODE
  local n="$1" cmd="$2"; shift 2
  "$KUBELET" "$cmd" --controller="$ctl_ep" --node="$(ep "node_${n}_csi")" --node-id="$n" \
    --kubelet-dir="$cluster/$n/kubelet" "$@"
}
health() {  # health NODE POD: the controller's and the node's VolumeCondition
  k "$1" health --volume="$vol" --pod="$2" | sed 's/^/  /'
}

say "2. CreateVolume (3 replicas, 1 GiB), ControllerPublish + NodeStage + NodePublish on n0"
vol=""
for _ in $(seq 1 50); do  # until the controller has heard from three nodes
  vol="$("$KUBELET" create --controller="$ctl_ep" --name=main-job --size=1G --replicas=3 \
    --param=rebuildRate=64M 2>"$run/create.err")" && break
  sleep 0.2
done
[ -n "$vol" ] || fail "CreateVolume: $(cat "$run/create.err")"
mnt="$(k n0 attach --volume="$vol" --pod=app-0)"
echo "  volume $vol mounted at $mnt"
findmnt -n -o SOURCE,FSTYPE,OPTIONS --target "$mnt" | sed 's/^/  /'
health n0 app-0

say "3. 48 files of 1 MiB written and fsync'd; fio (io_uring, 4k randwrite QD16, verify) for ${fio_seconds}s"
mkdir "$mnt/data"
for i in $(seq 1 48); do head -c 1M /dev/urandom >"$mnt/data/f$i"; done
sync -f "$mnt"
(cd "$mnt/data" && sha256sum f*) >"$run/sums"
fio --name=app --filename="$mnt/fio.dat" --size=64M --rw=randwrite --bs=4k --ioengine=io_uring \
  --direct=1 --iodepth=16 --runtime="$fio_seconds" --time_based --verify=crc32c --do_verify=1 \
  --verify_fatal=1 --verify_backlog=256 --output-format=json --output="$run/fio.json" >"$run/fio.log" 2>&1 &
fio_pid=$!
sleep 3
kill -0 "$fio_pid" 2>/dev/null || fail "fio ended early: $(cat "$run/fio.log")"

say "4. kill -9 the tandem-engine of n2 (holds a replica) while fio writes"
kill -9 "$(cat "$cluster/n2/engine.pid")"
n2_data="$(ep node_n2_data)"
for _ in $(seq 1 100); do
  k n0 health --volume="$vol" --pod=app-0 >"$run/health" 2>&1 && grep -q "^node abnormal=true.*$n2_data" "$run/health" && break
  sleep 0.2
done
grep -q "^node abnormal=true.*$n2_data" "$run/health" || fail "health does not name n2's replica: $(cat "$run/health")"
sed 's/^/  /' "$run/health"
kill -0 "$fio_pid" 2>/dev/null && echo "  fio is still writing (pid $fio_pid)"

say "5. restart n2's engine: the target reconnects it and rebuilds it"
"$root/scripts/cluster.sh" restart-engine --node=n2 --dir="$cluster" --build="$out"
"$TANDEMCTL" --engine="$(ep node_n0_engine)" target watch --volume="$vol" --until-done --timeout-s=90 ||
  fail "the rebuild of n2 did not complete"
for _ in $(seq 1 50); do
  k n0 health --volume="$vol" --pod=app-0 >"$run/health" 2>&1 && grep -q "^node abnormal=false" "$run/health" && break
  sleep 0.2
done
sed 's/^/  /' "$run/health"
grep -q "^node abnormal=false" "$run/health" || fail "not healthy after the rebuild"
fio_rc=0
wait "$fio_pid" || fio_rc=$?
fio_pid=""
[ "$fio_rc" = 0 ] || fail "fio saw an error (exit $fio_rc): $(tail -5 "$run/fio.log")"
python3 "$root/scripts/lib/fio_json.py" check "$run/fio.json" | sed 's/^/  fio: /' ||
  fail "fio reported an error"
echo "  fio: no I/O error through the kill and the rebuild; verify=crc32c passed"

say "6. failover: kill -9 n0's tandem-engine and tandem-node (the volume is mounted there)"
t0="$(now_ms)"
kill -9 "$(cat "$cluster/n0/engine.pid")" "$(cat "$cluster/n0/node.pid")"
"$KUBELET" force-detach --controller="$ctl_ep" --node-id=n0 --volume="$vol"
mnt1="$(k n1 attach --volume="$vol" --pod=app-0)"
t1="$(now_ms)"
echo "  mounted on n1 at $mnt1, $((t1 - t0)) ms after the kill (no wait for n0)"
(cd "$mnt1/data" && sha256sum -c --quiet "$run/sums") || fail "fsync'd data differs after the failover"
echo "  all 48 fsync'd files identical on n1 (sha256)"
health n1 app-0
k n1 detach --volume="$vol" --pod=app-0

say "7. teardown"
echo "main job: all checks passed"
