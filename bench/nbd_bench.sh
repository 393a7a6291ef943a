#!/usr/bin/env bash
# NBD benchmark, in one run on this machine:
#   raw         fio io_uring, O_DIRECT, on a file in the same filesystem as the replicas
#   nbdkit      nbdkit's file plugin on such a file, through fio's nbd engine (unix
#               socket): a published user-space NBD server, one copy, no replication
#   1-, 2-, 3-replica volumes on three local tandem-engine processes (target on engine 0),
#               through fio's nbd engine (unix socket)
# Jobs: 4 KiB randwrite and randread at QD1 and QD32, 1 MiB sequential write at QD8.
# Prints IOPS, MB/s, p50/p99 completion latency, CPU time per I/O (fio's usr+sys
# plus the engines' utime+stime from /proc/PID/stat, also split fio / engine 0
# (target + replica 0) / the other engines), the ratio to raw and, for writes,
# to raw / replicas; the loopback 4 KiB TCP round trip; then the issue-5 targets.
#
# Every volume is created and filled first; then each job runs on raw and on
# every volume back to back, and the whole set is repeated --rounds times, so
# a ratio compares runs seconds apart (the machine is shared and its load
# drifts). With several rounds the table shows medians and min..max ranges.
#
#   bench/nbd_bench.sh [--build=DIR] [--seconds=N] [--size=SIZE] [--jobs="JOB ..."]
#                      [--replicas="1 2 3"] [--rounds=N] [--taskset-fio=CPUS]
#                      [--taskset-engines=CPUS] [--engine-flags="..."] [--standin]
#
# --build: where tandem-engine and tandemctl are (default build/release).
# --seconds: per job (default 5; ~2.5 min per round). --rounds: default 1.
# --taskset-fio: run fio under taskset -c CPUS. --taskset-engines: pin every
# thread of every engine to CPUS (taskset -a -p; e.g. 0 with --taskset-fio=1
# keeps a 1-replica volume's target and replica loops on one CPU, away from
# fio; docs/performance.md). --engine-flags: extra
# tandem-engine flags (e.g. --busy-poll-us=20). --standin: qemu-nbd instead of
# tandem-engine volumes (checks the script itself; rows say "standin").
# Everything runs under /var/tmp/tandem-nbd-bench.* and is removed at exit/Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/cluster.sh"
source "$root/scripts/lib/nbd_bench.sh"

build="$root/build/release" replicas="1 2 3" standin=0 rounds=1 engine_flags= taskset_engines=
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --seconds=*) BENCH_SECONDS="${arg#*=}" ;;
    --size=*) BENCH_SIZE="${arg#*=}" ;;
    --jobs=*) BENCH_JOBS="${arg#*=}" ;;
    --replicas=*) replicas="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    --taskset-fio=*) BENCH_TASKSET_FIO="${arg#*=}" ;;
    --engine-flags=*) engine_flags="${arg#*=}" ;;
    --standin) standin=1 ;;
    --taskset-engines=*) taskset_engines="${arg#*=}" ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "nbd_bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done
TANDEM_BUILD="$build"
tc_init nbd-bench
bench_init

if [ $standin = 1 ]; then
  tc_log "raw io_uring baseline (${BENCH_SECONDS}s per job, $BENCH_SIZE)"
  bench_raw
  for n in $replicas; do bench_standin "$n"; done
else
  engine_tests_possible || tc_fail "need $TANDEM_ENGINE (with --grpc-listen) and $TANDEMCTL; build them first"
  # shellcheck disable=SC2086
  for e in e0 e1 e2; do
    start_engine "$e" $engine_flags
    if [ -n "$taskset_engines" ]; then
      taskset -a -p -c "$taskset_engines" "$(engine_pid "$e")" >/dev/null || tc_fail "taskset of engine $e"
    fi
  done
  tc_log "preparing the raw file and the volumes ($replicas replicas, $BENCH_SIZE each)"
  bench_prepare_raw
  bench_prepare_nbdkit
  for n in $replicas; do
    engines=(e0 e1 e2)
    bench_prepare_volume "$n" "${engines[@]:0:$n}"
  done
  for ((r = 1; r <= rounds; r++)); do
    tc_log "round $r of $rounds (${BENCH_SECONDS}s per job)"
    bench_rtt "$r"
    bench_round "$r"
  done
  bench_cleanup
fi
echo
bench_table
