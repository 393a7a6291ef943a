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
# Knobs: BENCH_SECONDS (per job, default 5), BENCH_SIZE (default 512M),
# BENCH_JOBS (default: all five below). The file and each volume are filled
# with 1 MiB writes first (not measured), so reads hit written blocks.

BENCH_ALL_JOBS=(randwrite-4k-qd1 randwrite-4k-qd32 randread-4k-qd1 randread-4k-qd32 seqwrite-1m-qd8)

bench_init() {
  : "${BENCH_SECONDS:=5}" "${BENCH_SIZE:=512M}"
  [ -n "${BENCH_JOBS:-}" ] || BENCH_JOBS="${BENCH_ALL_JOBS[*]}"
  BENCH_TSV="$TC_RUN_DIR/bench.tsv"
  : >"$BENCH_TSV"
  BENCH_CLK_TCK="$(getconf CLK_TCK)"
}

# _bench_job_args JOB: fio arguments of a job name (rw, bs, iodepth).
_bench_job_args() {
  local rw bs qd
  IFS=- read -r rw bs qd <<<"$1"
  [ "$rw" = seqwrite ] && rw=write
  echo "--rw=$rw --bs=$bs --iodepth=${qd#qd}"
}

# _bench_run LABEL REPLICAS JOB PIDS -- FIO ARGS...: runs one timed job and appends
# "label replicas job iops p50 p99 ios cpu_us_per_io" to the results.
_bench_run() {
  local label="$1" replicas="$2" job="$3" pids="$4"; shift 5
  local json="$TC_RUN_DIR/bench-$label-$job.json"
  # shellcheck disable=SC2086,SC2046
  local before; before="$(cpu_ticks $pids)"
  # shellcheck disable=SC2046
  fio --name="$job" --output-format=json --output="$json" --time_based --runtime="$BENCH_SECONDS" \
    --ramp_time=1 --size="$BENCH_SIZE" --randrepeat=0 --norandommap $(_bench_job_args "$job") "$@" \
    2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio $job on $label"
  # shellcheck disable=SC2086
  local after; after="$(cpu_ticks $pids)"
  python3 "$TC_LIB_DIR/fio_json.py" check "$json" >/dev/null || tc_fail "fio $job on $label had errors"
  local iops p50 p99 ios cpu_s runtime
  read -r iops p50 p99 ios cpu_s runtime < <(python3 "$TC_LIB_DIR/fio_json.py" stats "$json")
  local per_io
  per_io="$(python3 -c "import sys; f, t, hz, n = map(float, sys.argv[1:]); print(f'{(f + t / hz) / max(n, 1) * 1e6:.1f}')" \
    "$cpu_s" "$((after - before))" "$BENCH_CLK_TCK" "$ios")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$replicas" "$job" "$iops" "$p50" "$p99" \
    "$ios" "$per_io" >>"$BENCH_TSV"
  tc_log "bench $label $job: iops=$iops p50=${p50}us p99=${p99}us cpu/io=${per_io}us"
}

bench_raw() {
  local file="$TC_RUN_DIR/raw.img"
  fallocate -l "$BENCH_SIZE" "$file" 2>/dev/null || truncate -s "$BENCH_SIZE" "$file"
  fio --name=fill --filename="$file" --ioengine=io_uring --direct=1 --rw=write --bs=1M \
    --iodepth=8 --size="$BENCH_SIZE" --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" ||
    tc_fail "fio fill of $file"
  local job
  for job in $BENCH_JOBS; do
    _bench_run raw 0 "$job" "" -- --filename="$file" --ioengine=io_uring --direct=1
  done
  rm -f "$file"
}

# bench_volume N E0 [E1 ...]: volume "bench-rN" with a replica on each engine.
bench_volume() {
  local n="$1"; shift
  local vol="bench-r$n" engines=("$@") pids="" e
  for e in "${engines[@]}"; do pids="$pids $(engine_pid "$e")"; done
  create_volume "$vol" "$BENCH_SIZE" "${engines[@]}"
  local uri; uri="$(volume_uri "$vol" "${engines[0]}")"
  fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size="$BENCH_SIZE" \
    --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio fill of $vol"
  local job
  for job in $BENCH_JOBS; do
    _bench_run "${n}-replica" "$n" "$job" "$pids" -- --ioengine=nbd --uri="$uri"
  done
  ctl "${engines[0]}" target destroy --volume="$vol" >>"$TC_RUN_DIR/ctl.log" 2>&1 ||
    tc_fail "target destroy $vol"
  for e in "${engines[@]}"; do
    ctl "$e" replica delete --volume="$vol" >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "replica delete $vol on $e"
  done
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
