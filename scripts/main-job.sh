#!/usr/bin/env bash
# The main job (README): issue 5 end to end on one machine.
#   1. installs missing packages and builds Release (tandem-engine, tandemctl,
#      ack_verifier, replica_bench) in build/release,
#   2. starts three tandem-engine processes on 127.0.0.1 and creates a
#      3-replica volume exported over NBD,
#   3. runs fio (nbd engine, verify=crc32c) and the acknowledged-write verifier
#      through the export and kills -9 one replica engine mid-run: no I/O error
#      may reach either, fio's verify must pass, the verifier must find every
#      acknowledged write, and the killed replica's generation must be lower,
#   4. benchmarks raw io_uring vs 1-, 2- and 3-replica volumes (fio nbd engine)
#      in the same run and prints the summary table with the ratios to raw,
#   5. removes every process and file it made, also on Ctrl-C.
#
#   scripts/main-job.sh [--seconds=N] [--size=SIZE] [--replicas="1 2 3"] [--no-bench]
#   scripts/main-job.sh --replica-bench [replica_bench flags]   (the earlier main job)
#
# Exit status 0 only if every check passed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="${TANDEM_BUILD_ROOT:-$root/build}/release"

build_targets() {
  "$root/scripts/install-deps.sh"
  # Tests on so ack_verifier exists; only the needed targets are built.
  cmake -S "$root" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTANDEM_BUILD_TESTS=ON >/dev/null
  cmake --build "$out" -j"${TANDEM_JOBS:-2}" --target "$@"
}

if [ "${1:-}" = "--replica-bench" ]; then
  shift
  build_targets replica_bench
  exec "$out/bench/replica_bench" "$@"
fi

bench=1 replicas="1 2 3"
BENCH_SECONDS=3 BENCH_SIZE=512M
for arg in "$@"; do
  case "$arg" in
    --seconds=*) BENCH_SECONDS="${arg#*=}" ;;
    --size=*) BENCH_SIZE="${arg#*=}" ;;
    --replicas=*) replicas="${arg#*=}" ;;
    --no-bench) bench=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "main-job: unknown argument $arg (the replica benchmark: --replica-bench $arg)" >&2; exit 2 ;;
  esac
done

build_targets tandem-engine tandemctl ack_verifier
TANDEM_ENGINE="$out/replica-engine/api/tandem-engine"
TANDEMCTL="$out/tools/tandemctl/tandemctl"
ACK_VERIFIER="$out/tests/ack_verifier"
source "$root/scripts/lib/cluster.sh"
source "$root/scripts/lib/nbd_bench.sh"
tc_init main-job
echo "run dir: $TC_RUN_DIR (removed at exit)"

# ---- 1. three engines, a 3-replica volume -----------------------------------
for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-main 1G e0 e1 e2
uri="$(volume_uri vol-main e0)"
gen0="$(ctl_field e0 generation target get --volume=vol-main)"
echo "volume vol-main: 3 replicas ($(engine_addr e0) local, $(engine_addr e1), $(engine_addr e2)), NBD $uri"

# ---- 2. fio verify + ack_verifier through the export, kill -9 mid-run -------
tc_log "fio randwrite verify=crc32c on [0,128M) and ack_verifier on [512M,768M); kill -9 e2 after 3 s"
fio_nbd_bg fio-verify "$uri" --rw=randwrite --bs=4k --size=128M --iodepth=16 --loops=2 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
fio_pid="${TC_PID_OF[fio-verify]}"
tc_spawn ack-write "$ACK_VERIFIER" write --uri="$uri" --log="$TC_RUN_DIR/acks.log" \
  --region=512M:256M --seconds=10 --qd=16 --io-timeout-ms=30000
ack_pid="${TC_PID_OF[ack-write]}"
sleep 3
kill -0 "$fio_pid" 2>/dev/null || tc_fail "fio finished before the kill"
victim="$(engine_addr e2)"
tc_log "kill -9 tandem-engine e2 (replica at $victim)"
kill9_engine e2
ack_rc=0; wait_rc "$ack_pid" 120 || ack_rc=$?
fio_rc=0; wait_rc "$fio_pid" 300 || fio_rc=$?
[ $ack_rc = 0 ] || tc_fail "ack_verifier write saw an I/O error or stalled (exit $ack_rc)"
[ $fio_rc = 0 ] || tc_fail "fio exited $fio_rc"
fio_check "$TC_RUN_DIR/fio-verify.json" >"$TC_RUN_DIR/fio-check.out"
"$ACK_VERIFIER" verify --uri="$uri" --log="$TC_RUN_DIR/acks.log" >"$TC_RUN_DIR/ack-verify.out" ||
  { cat "$TC_RUN_DIR/ack-verify.out"; tc_fail "acknowledged writes lost"; }
victim_state="$(replica_state_in_target vol-main e0 "$victim")"
gen_after="$(ctl_field e0 generation target get --volume=vol-main)"
restart_engine e2 --new-ports  # new ports: the target cannot reconnect and rebuild it
g0="$(ctl_field e0 generation replica get --volume=vol-main)"
g1="$(ctl_field e1 generation replica get --volume=vol-main)"
g2="$(ctl_field e2 generation replica get --volume=vol-main)"
[ "$victim_state" = FAULTED ] || tc_fail "killed replica is '$victim_state' in the target, want FAULTED"
[ "$g2" -lt "$g0" ] && [ "$g2" -lt "$g1" ] || tc_fail "killed replica generation $g2 not below survivors ($g0, $g1)"
ctl e0 target destroy --volume=vol-main >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "target destroy vol-main"
for e in e0 e1 e2; do ctl "$e" replica delete --volume=vol-main >>"$TC_RUN_DIR/ctl.log" 2>&1 || true; done

# ---- 3. benchmark: raw vs N replicas, same run ------------------------------
if [ $bench = 1 ]; then
  bench_init
  tc_log "benchmark: raw io_uring, then volumes with $replicas replicas (${BENCH_SECONDS}s per job)"
  bench_raw
  for n in $replicas; do
    engines=(e0 e1 e2)
    bench_volume "$n" "${engines[@]:0:$n}"
  done
fi

# ---- summary -----------------------------------------------------------------
echo
echo "== kill -9 of a replica engine during I/O =="
sed 's/^/  /' "$TC_RUN_DIR/fio-check.out"
echo "  ack_verifier write: $(grep '^write:' "$TC_RUN_DIR/ack-write.log")"
echo "  ack_verifier $(cat "$TC_RUN_DIR/ack-verify.out")"
echo "  killed replica: $victim_state in the target; target generation $gen0 -> $gen_after"
echo "  replica generations after restart: e0=$g0 e1=$g1 e2(killed)=$g2"
echo "  result: no I/O error reached fio or the verifier, nothing acknowledged was lost"
if [ $bench = 1 ]; then
  echo
  echo "== fio through the NBD export vs raw io_uring on the same filesystem (same run) =="
  bench_table
fi
echo
echo "main job: all checks passed"
