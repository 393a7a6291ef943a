# shellcheck shell=bash
# nbd_bench.sh: the NBD benchmark's functions, shared by bench/nbd_bench.sh and
# scripts/main-job.sh. Source scripts/lib/cluster.sh first and call tc_init.
#
#   bench_init                     results in $TC_RUN_DIR/bench.tsv
#   bench_raw                      fio io_uring, O_DIRECT, on a file in the run dir
#                                  (the same filesystem as the replicas)
#   bench_volume N E0 [E1 ...]     an N-replica volume (target on E0), the jobs through
#                                  fio's nbd engine, then the volume is removed
#   bench_table                    prints the table (ratios to raw from this run)
#
# Interleaved form (bench/nbd_bench.sh): on a shared, noisy machine the load
# changes within minutes, so each job runs on raw and on every volume back to
# back, and the whole set is repeated:
#   bench_prepare_raw              creates and fills the raw file (kept)
#   bench_prepare_volume N E0 [E1 ...]  creates and fills volume bench-rN (kept)
#   bench_round R                  every job on raw, then on each prepared volume
#   bench_rtt R                    4 KiB TCP ping-pong on 127.0.0.1 (fio's net
#                                  engine, pingpong=1): the loopback round trip
#                                  of the QD1 latency target, same run
#   bench_prepare_nbdkit           nbdkit's file plugin serving a file in the same
#                                  filesystem over a unix socket ("nbdkit" rows): a
#                                  published user-space NBD server with one copy and
#                                  no replication, the peer every volume is read against
#   bench_cleanup                  destroys the prepared volumes, stops nbdkit,
#                                  removes the files
#
# Knobs: BENCH_SECONDS (per job, default 5), BENCH_SIZE (default 512M),
# BENCH_JOBS (default: all five below), BENCH_TASKSET_FIO (a CPU list: fio runs
# under taskset -c). The file and each volume are filled with 1 MiB writes first
# (not measured), so reads hit written blocks and no write lands in a hole.
#
# TSV rows: label replicas job iops p50_us p99_us ios cpu_us_per_io round
# fio_cpu_us engine0_cpu_us other_engines_cpu_us (CPU per I/O; engine 0 hosts
# the target and replica 0) lat_p50_us (fio's lat = slat + clat: raw io_uring
# counts its submit in slat, the volume's submit is in its clat). The RTT row has replicas -1 and job pingpong-4k.
# After each Tandem job the target's per-stage latency over that job (two
# `target get` snapshots subtracted, scripts/lib/stage_latency.py) is logged and
# kept in $TC_RUN_DIR/stages.tsv (label replicas job round stage count p50_us
# p99_us mean_us); bench_table prints its medians under the main table.

BENCH_ALL_JOBS=(randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32 seqwrite-1m-qd8)

bench_init() {
  : "${BENCH_SECONDS:=5}" "${BENCH_SIZE:=512M}"
  [ -n "${BENCH_JOBS:-}" ] || BENCH_JOBS="${BENCH_ALL_JOBS[*]}"
  BENCH_TSV="$TC_RUN_DIR/bench.tsv"
  BENCH_STAGES_TSV="$TC_RUN_DIR/stages.tsv"
  : >"$BENCH_TSV"
  : >"$BENCH_STAGES_TSV"
  BENCH_CLK_TCK="$(getconf CLK_TCK)"
  BENCH_VOLUMES=()
  declare -gA BENCH_URI=() BENCH_PIDS=() BENCH_ENGINES=()
}

# _bench_job_args JOB: fio arguments of a job name (rw, bs, iodepth).
_bench_job_args() {
  local rw bs qd
  IFS=- read -r rw bs qd <<<"$1"
  [ "$rw" = seqwrite ] && rw="write"
  echo "--rw=$rw --bs=$bs --iodepth=${qd#qd}"
}

_bench_fio() {
  if [ -n "${BENCH_TASKSET_FIO:-}" ]; then
    taskset -c "$BENCH_TASKSET_FIO" fio "$@"
  else
    fio "$@"
  fi
}

# _bench_run LABEL REPLICAS JOB PIDS -- FIO ARGS...: runs one timed job and appends
# its row to the results. PIDS: the engines, engine 0 (target) first.
_bench_run() {
  local label="$1" replicas="$2" job="$3" pids="$4"; shift 5
  local round="${BENCH_ROUND:-1}"
  local json="$TC_RUN_DIR/bench-$label-$job-$round.json"
  local pid0="${pids%% *}" rest=""
  [ -n "$pid0" ] && rest="${pids#"$pid0"}"
  local b0 br a0 ar
  # shellcheck disable=SC2086
  b0="$(cpu_ticks $pid0)"
  # shellcheck disable=SC2086
  br="$(cpu_ticks $rest)"
  # shellcheck disable=SC2046
  _bench_fio --name="$job" --output-format=json --output="$json" --time_based --runtime="$BENCH_SECONDS" \
    --ramp_time=1 --size="$BENCH_SIZE" --randrepeat=0 --norandommap --lat_percentiles=1 \
    $(_bench_job_args "$job") "$@" 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio $job on $label"
  # shellcheck disable=SC2086
  a0="$(cpu_ticks $pid0)"
  # shellcheck disable=SC2086
  ar="$(cpu_ticks $rest)"
  python3 "$TC_LIB_DIR/fio_json.py" check "$json" >/dev/null || tc_fail "fio $job on $label had errors"
  local iops p50 p99 ios cpu_s runtime
  read -r iops p50 p99 ios cpu_s runtime < <(python3 "$TC_LIB_DIR/fio_json.py" stats "$json")
  # Engine ticks cover fio's ramp second too, fio's own numbers do not: scale
  # the engines' CPU to the measured part.
  local per_io
  per_io="$(python3 -c "
import sys
f, e0, er, hz, n, rt = map(float, sys.argv[1:])
k = rt / (rt + 1.0) / hz / max(n, 1) * 1e6
fio, c0, cr = f / max(n, 1) * 1e6, e0 * k, er * k
print(f'{fio + c0 + cr:.1f} {fio:.1f} {c0:.1f} {cr:.1f}')" \
    "$cpu_s" "$((a0 - b0))" "$((ar - br))" "$BENCH_CLK_TCK" "$ios" "$runtime")"
  local total cf c0 cr lat50
  read -r total cf c0 cr <<<"$per_io"
  lat50="$(python3 "$TC_LIB_DIR/fio_json.py" lat "$json")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$replicas" "$job" "$iops" "$p50" \
    "$p99" "$ios" "$total" "$round" "$cf" "$c0" "$cr" "$lat50" >>"$BENCH_TSV"
  tc_log "bench $label $job (round $round): iops=$iops p50=${p50}us p99=${p99}us cpu/io=${total}us"
}

bench_prepare_raw() {
  BENCH_RAW_FILE="$TC_RUN_DIR/raw.img"
  fallocate -l "$BENCH_SIZE" "$BENCH_RAW_FILE" 2>/dev/null || truncate -s "$BENCH_SIZE" "$BENCH_RAW_FILE"
  fio --name=fill --filename="$BENCH_RAW_FILE" --ioengine=io_uring --direct=1 --rw=write --bs=1M \
    --iodepth=8 --size="$BENCH_SIZE" --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" ||
    tc_fail "fio fill of $BENCH_RAW_FILE"
}

_bench_raw_job() {
  _bench_run raw 0 "$1" "" -- --filename="$BENCH_RAW_FILE" --ioengine=io_uring --direct=1
}

bench_raw() {
  bench_prepare_raw
  local job
  for job in $BENCH_JOBS; do _bench_raw_job "$job"; done
  rm -f "$BENCH_RAW_FILE"
}

# bench_prepare_volume N E0 [E1 ...]: volume "bench-rN" with a replica on each
# engine, filled; remembered for bench_round and bench_cleanup.
bench_prepare_volume() {
  local n="$1"; shift
  local vol="bench-r$n" pids="" e
  for e in "$@"; do pids="$pids $(engine_pid "$e")"; done
  create_volume "$vol" "$BENCH_SIZE" "$@"
  local uri; uri="$(volume_uri "$vol" "$1")"
  fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$BENCH_SIZE" \
    --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio fill of $vol"
  BENCH_VOLUMES+=("$n")
  BENCH_URI[$n]="$uri"
  BENCH_PIDS[$n]="${pids# }"
  BENCH_ENGINES[$n]="$*"
}

_bench_volume_job() {
  local n="$1" job="$2"
  # shellcheck disable=SC2206
  local engines=(${BENCH_ENGINES[$n]})
  local before="$TC_RUN_DIR/stages-before.out" after="$TC_RUN_DIR/stages-after.out"
  # The target's stage histograms around the job (outside its CPU window).
  ctl "${engines[0]}" target get --volume="bench-r$n" >"$before" 2>>"$TC_RUN_DIR/ctl.log" || : >"$before"
  _bench_run "${n}-replica" "$n" "$job" "${BENCH_PIDS[$n]}" -- --ioengine=nbd --uri="${BENCH_URI[$n]}"
  ctl "${engines[0]}" target get --volume="bench-r$n" >"$after" 2>>"$TC_RUN_DIR/ctl.log" || return 0
  python3 "$TC_LIB_DIR/stage_latency.py" diff "$before" "$after" "${n}-replica" "$n" "$job" \
    "${BENCH_ROUND:-1}" >>"$BENCH_STAGES_TSV" || true
}

_bench_destroy_volume() {
  local n="$1" vol="bench-r$1" e
  # shellcheck disable=SC2206
  local engines=(${BENCH_ENGINES[$n]})
  ctl "${engines[0]}" target destroy --volume="$vol" >>"$TC_RUN_DIR/ctl.log" 2>&1 ||
    tc_fail "target destroy $vol"
  for e in "${engines[@]}"; do
    ctl "$e" replica delete --volume="$vol" >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "replica delete $vol on $e"
  done
}

# bench_volume N E0 [E1 ...]: volume "bench-rN" with a replica on each engine.
bench_volume() {
  local n="$1"
  bench_prepare_volume "$@"
  local job
  for job in $BENCH_JOBS; do _bench_volume_job "$n" "$job"; done
  _bench_destroy_volume "$n"
  local keep=() v
  for v in "${BENCH_VOLUMES[@]}"; do [ "$v" = "$n" ] || keep+=("$v"); done
  BENCH_VOLUMES=("${keep[@]}")
}

# bench_prepare_nbdkit: nbdkit's file plugin on a filled file beside the raw one,
# on a unix socket, one connection per fio job like the volumes. cache=none asks
# the plugin to keep its writes out of the page cache (it has no O_DIRECT), so it
# is one copy and no replication: what a user-space NBD hop costs on this machine.
bench_prepare_nbdkit() {
  command -v nbdkit >/dev/null || { tc_log "bench: nbdkit not installed; no nbdkit rows"; return 0; }
  local img="$TC_RUN_DIR/nbdkit.img" sock="$TC_RUN_DIR/nbdkit.sock"
  fallocate -l "$BENCH_SIZE" "$img" 2>/dev/null || truncate -s "$BENCH_SIZE" "$img"
  tc_spawn nbdkit nbdkit --foreground --exit-with-parent --unix="$sock" file file="$img" cache=none
  BENCH_NBDKIT_PID="${TC_PID_OF[nbdkit]}"
  BENCH_NBDKIT_URI="nbd+unix:///?socket=$sock"
  BENCH_NBDKIT_FILE="$img"
  wait_for "nbdinfo --size '$BENCH_NBDKIT_URI'" 10 "nbdkit"
  fio --name=fill --ioengine=nbd --uri="$BENCH_NBDKIT_URI" --rw=write --bs=1M --iodepth=8 \
    --size="$BENCH_SIZE" --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio fill of nbdkit"
}

_bench_nbdkit_job() {
  [ -n "${BENCH_NBDKIT_PID:-}" ] || return 0
  _bench_run nbdkit 1 "$1" "$BENCH_NBDKIT_PID" -- --ioengine=nbd --uri="$BENCH_NBDKIT_URI"
}

# bench_round R: each job on raw, nbdkit and every prepared volume, back to back.
bench_round() {
  BENCH_ROUND="$1"
  local job n
  for job in $BENCH_JOBS; do
    _bench_raw_job "$job"
    _bench_nbdkit_job "$job"
    for n in "${BENCH_VOLUMES[@]}"; do _bench_volume_job "$n" "$job"; done
  done
}

# bench_rtt R: p50 of a 4 KiB TCP ping-pong on 127.0.0.1 (fio net engine).
bench_rtt() {
  local round="$1" port json="$TC_RUN_DIR/bench-rtt-$1.json"
  port=$((20000 + RANDOM % 20000))
  fio --name=echo --ioengine=net --protocol=tcp --listen --port="$port" --rw=read --bs=4k \
    --size=64M --pingpong=1 --output=/dev/null >>"$TC_RUN_DIR/bench-fio.log" 2>&1 &
  local srv=$!
  local ok=0 _
  for _ in $(seq 1 50); do
    if fio --name=pingpong --ioengine=net --protocol=tcp --hostname=127.0.0.1 --port="$port" \
      --rw=write --bs=4k --size=64M --pingpong=1 --output-format=json --output="$json" \
      >>"$TC_RUN_DIR/bench-fio.log" 2>&1; then
      ok=1
      break
    fi
    sleep 0.1  # the listener may not be up yet
  done
  wait "$srv" 2>/dev/null || true
  [ $ok = 1 ] || { tc_log "bench: loopback ping-pong failed; no RTT row"; return 0; }
  local iops p50 p99 ios cpu_s runtime
  read -r iops p50 p99 ios cpu_s runtime < <(python3 "$TC_LIB_DIR/fio_json.py" stats "$json")
  printf 'rtt\t-1\tpingpong-4k\t%s\t%s\t%s\t%s\t0\t%s\t0\t0\t0\n' "$iops" "$p50" "$p99" "$ios" "$round" \
    >>"$BENCH_TSV"
  tc_log "bench loopback 4 KiB ping-pong (round $round): p50=${p50}us p99=${p99}us"
}

bench_cleanup() {
  local n
  for n in "${BENCH_VOLUMES[@]}"; do _bench_destroy_volume "$n"; done
  BENCH_VOLUMES=()
  if [ -n "${BENCH_NBDKIT_PID:-}" ]; then
    kill -TERM "$BENCH_NBDKIT_PID" 2>/dev/null || true
    _wait_exit "$BENCH_NBDKIT_PID" 10 || tc_fail "nbdkit did not exit"
    rm -f "$BENCH_NBDKIT_FILE"
    BENCH_NBDKIT_PID=""
  fi
  [ -n "${BENCH_RAW_FILE:-}" ] && rm -f "$BENCH_RAW_FILE"
  return 0
}

bench_table() { python3 "$TC_LIB_DIR/bench_table.py" "$BENCH_TSV"; }

# bench_standin N: the jobs against qemu-nbd serving a file ("standin-N" rows):
# exercises the benchmark without a tandem-engine. Not a Tandem number.
bench_standin() {
  local n="$1" img="$TC_RUN_DIR/standin.img" sock="$TC_RUN_DIR/standin.sock"
  truncate -s "$BENCH_SIZE" "$img"
  tc_spawn "standin-$n" qemu-nbd --socket="$sock" --format=raw --export-name=vol --cache=none \
    --aio=native --persistent --shared=4 "$img"
  local pid="${TC_PID_OF[standin-$n]}" uri="nbd+unix:///vol?socket=$sock"
  wait_for "nbdinfo --size '$uri'" 10 "qemu-nbd stand-in"
  fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$BENCH_SIZE" \
    --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio fill of the stand-in"
  local job
  for job in $BENCH_JOBS; do
    _bench_run "standin-$n" "$n" "$job" "$pid" -- --ioengine=nbd --uri="$uri"
  done
  kill -TERM "$pid"
  _wait_exit "$pid" 10 || tc_fail "qemu-nbd stand-in did not exit"
  rm -f "$img"
}
