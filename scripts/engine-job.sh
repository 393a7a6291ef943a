#!/usr/bin/env bash
# The engine job (formerly the main job; `scripts/main-job.sh --engine`): issues 5
# and 6 end to end on one machine, below the CSI layer.
#   1. installs missing packages and builds Release (tandem-engine, tandemctl,
#      ack_verifier, replica_bench) in build/release,
#   2. starts three tandem-engine processes on 127.0.0.1 and creates a
#      3-replica volume exported over NBD,
#   3. runs fio (nbd engine, verify=crc32c) and the acknowledged-write verifier
#      through the export and kills -9 one replica engine mid-run: the killed
#      replica is FAULTED and its generation lower than the survivors'; the
#      engine is restarted on its original ports while the writers go on, the
#      target reconnects it and rebuilds it incrementally (progress bar from
#      `tandemctl target watch --until-done`); no I/O error may reach either
#      writer, fio's verify must pass, the verifier must find every
#      acknowledged write, and the three replica files must be identical,
#   4. benchmarks raw io_uring vs 1-, 2- and 3-replica volumes (fio nbd engine)
#      in the same run and prints the summary table with the ratios to raw,
#   5. removes every process and file it made, also on Ctrl-C.
#
#   scripts/engine-job.sh [--seconds=N] [--size=SIZE] [--replicas="1 2 3"] [--no-bench]
#   scripts/engine-job.sh --replica-bench [replica_bench flags]   (the earlier main job)
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
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "main-job: unknown argument $arg (the replica benchmark: --replica-bench $arg)" >&2; exit 2 ;;
  esac
done

build_targets tandem-engine tandemctl ack_verifier
TANDEM_ENGINE="$out/replica-engine/service/tandem-engine"
TANDEMCTL="$out/tools/tandemctl/tandemctl"
ACK_VERIFIER="$out/tests/ack_verifier"
source "$root/scripts/lib/cluster.sh"
source "$root/scripts/lib/nbd_bench.sh"
tc_init main-job
echo "run dir: $TC_RUN_DIR (removed at exit)"

# ---- 1. three engines, a 3-replica volume -----------------------------------
for e in e0 e1 e2; do start_engine "$e"; done
# Rebuilds at most 100 MiB/s here so the progress bar is visible for a moment.
create_volume vol-main 1G e0 e1 e2 -- --rebuild-rate=100M
uri="$(volume_uri vol-main e0)"
gen0="$(ctl_field e0 generation target get --volume=vol-main)"
echo "volume vol-main: 3 replicas ($(engine_addr e0) local, $(engine_addr e1), $(engine_addr e2)), NBD $uri"

# ---- 2. fio verify + ack_verifier through the export, kill -9, rebuild ------
tc_log "fio randwrite verify=crc32c on [0,128M) and ack_verifier on [512M,768M) for 12 s; kill -9 e2 after 3 s"
fio_nbd_bg fio-verify "$uri" --rw=randwrite --bs=4k --size=128M --iodepth=16 --loops=2 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
fio_pid="${TC_PID_OF[fio-verify]}"
tc_spawn ack-write "$ACK_VERIFIER" write --uri="$uri" --log="$TC_RUN_DIR/acks.log" \
  --region=512M:256M --seconds=12 --qd=16 --io-timeout-ms=30000
ack_pid="${TC_PID_OF[ack-write]}"
sleep 3
kill -0 "$fio_pid" 2>/dev/null || tc_fail "fio finished before the kill"
victim="$(engine_addr e2)"
tc_log "kill -9 tandem-engine e2 (replica at $victim)"
kill9_engine e2
wait_for "[ \"\$(replica_state_in_target vol-main e0 $victim)\" = FAULTED ]" 10 "e2 FAULTED in the target"
victim_state=FAULTED
# The killed replica's generation, before it can be rebuilt. The engine comes
# back on its original ports, so the target reconnects it within a second and
# the rebuild moves it to the current generation: it cannot be read with
# `replica get` after the restart without racing the target. Two views that
# do not race: the target's record of the replica (the generation it last
# confirmed, replica.N.generation) now, and the generation the target reads
# from the restarted replica's own metadata when it reconnects (its log line
# "replica ADDR is back (generation N)"), below. Both must be below the
# survivors' on-disk generation (`replica get` on e0 and e1).
vi="$(replica_index vol-main e0 "$victim")"
g2_target="$(ctl_field e0 "replica\.$vi\.generation" target get --volume=vol-main)"
gen_after="$(ctl_field e0 generation target get --volume=vol-main)"
g0="$(ctl_field e0 generation replica get --volume=vol-main)"
g1="$(ctl_field e1 generation replica get --volume=vol-main)"
[ "$g2_target" -lt "$g0" ] && [ "$g2_target" -lt "$g1" ] ||
  tc_fail "killed replica generation $g2_target (target's view) not below survivors ($g0, $g1)"
sleep 2
kill -0 "$ack_pid" 2>/dev/null || tc_fail "the verifier ended before the restart"
tc_log "restart e2 on its original ports; the target reconnects it and rebuilds it under load"
restart_engine e2
echo "rebuild of $victim (tandemctl target watch --until-done):"
ctl e0 target watch --volume=vol-main --until-done --timeout-s=180 ||
  tc_fail "the rebuild of e2 did not complete"
back="$(sed -n "s/.*replica $victim is back (generation \([0-9]*\)).*/\1/p" "$TC_RUN_DIR/e0.log" | tail -n 1)"
[ -n "$back" ] || tc_fail "no reconnect of $victim in e0's log"
[ "$back" -lt "$g0" ] && [ "$back" -lt "$g1" ] ||
  tc_fail "restarted replica's on-disk generation $back not below survivors ($g0, $g1)"
ack_running_after_rebuild=no
kill -0 "$ack_pid" 2>/dev/null && ack_running_after_rebuild=yes
ack_rc=0; wait_rc "$ack_pid" 120 || ack_rc=$?
fio_rc=0; wait_rc "$fio_pid" 300 || fio_rc=$?
[ $ack_rc = 0 ] || tc_fail "ack_verifier write saw an I/O error or stalled (exit $ack_rc)"
[ $fio_rc = 0 ] || tc_fail "fio exited $fio_rc"
fio_check "$TC_RUN_DIR/fio-verify.json" >"$TC_RUN_DIR/fio-check.out"
wait_rebuilt vol-main e0 120
ctl e0 target get --volume=vol-main >"$TC_RUN_DIR/target-after.out"
rb() { sed -n "s/^rebuild\.$1=//p" "$TC_RUN_DIR/target-after.out"; }
[ "$(rb replica)" = "$victim" ] || tc_fail "the last rebuild is not e2's"
[ "$(rb mode)" = INCREMENTAL ] || tc_fail "e2's rebuild was $(rb mode), want INCREMENTAL"
"$ACK_VERIFIER" verify --uri="$uri" --log="$TC_RUN_DIR/acks.log" >"$TC_RUN_DIR/ack-verify.out" ||
  { cat "$TC_RUN_DIR/ack-verify.out"; tc_fail "acknowledged writes lost"; }
nbd_flush "$uri"
same_replicas vol-main e0 e1 e2 >"$TC_RUN_DIR/same.out"
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
echo "== kill -9 of a replica engine during I/O, restart, online rebuild =="
sed 's/^/  /' "$TC_RUN_DIR/fio-check.out"
echo "  ack_verifier write: $(grep '^write:' "$TC_RUN_DIR/ack-write.log")"
echo "  ack_verifier $(cat "$TC_RUN_DIR/ack-verify.out")"
echo "  killed replica: $victim_state in the target; target generation $gen0 -> $gen_after"
echo "  generations: e0=$g0 e1=$g1 e2(killed)=$g2_target (target's record), $back (read from its disk at reconnect)"
echo "  rebuild: $(rb mode) of $victim from $(rb source): $(rb bytes_copied) bytes copied," \
  "rate $(rb rate_bytes_per_sec) B/s; writers still running when it finished: $ack_running_after_rebuild"
sed 's/^ */  /' "$TC_RUN_DIR/same.out"
echo "  result: no I/O error reached fio or the verifier, nothing acknowledged was lost," \
  "the rebuilt replica is identical to the survivors"
if [ $bench = 1 ]; then
  echo
  echo "== fio through the NBD export vs raw io_uring on the same filesystem (same run) =="
  bench_table
fi
echo
echo "main job: all checks passed"
