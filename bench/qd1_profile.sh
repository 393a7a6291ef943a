#!/usr/bin/env bash
# Where a 1-replica 4 KiB randwrite QD1 goes (docs/performance.md, "Where the
# 1-replica QD1 time goes"). One engine (e0) holding a 1-replica volume (the
# target and its replica in-process), fio's nbd engine at QD1, and raw fio
# io_uring on a file in the same filesystem as the disk's own reference:
#
#   1. raw and volume QD1 untraced (--seconds each): fio clat and lat p50
#      (lat = slat + clat: the only one that compares raw io_uring with NBD), the target's
#      stage histograms over the volume job (tandemctl target get, subtracted)
#   2. a second volume job during which, one after the other:
#      perf stat --per-thread (syscalls by name, context switches, CPU time of
#      every engine and fio thread) over 3 s, the I/O count of that window =
#      the engine's sendmsg count (one reply per I/O);
#      perf record -g on the engine (3 s, cpu profile);
#      perf record -a of scheduler, block and the two threads' syscall
#      tracepoints (0.5 s), turned into a per-I/O timeline
#      (scripts/lib/qd1_timeline.py) -- tracing slows every step, so its
#      microseconds are inflated; compare segments with the raw timeline taken
#      the same way
#   3. the same trace on a raw fio job
#
#   bench/qd1_profile.sh [--build=DIR] [--seconds=N] [--engine-flags="..."]
#                        [--out=DIR] [--taskset-fio=CPUS] [--taskset-engine=CPUS]
#                        [--untraced-only] [--replicas=N]
#
# --replicas=N (default 1): N engines e0..eN-1 on 127.0.0.1, one replica on
# each, the target on e0 (its local replica in-process, the others over TCP);
# every engine's loop thread is counted, profiled and traced, and the
# timeline (qd1_timeline.py repl) follows the I/O through the remote
# replicas' loops too (docs/performance.md, "Where the 3-replica QD1 time
# goes").
#
# --out keeps the perf data, traces and reports (default: a temp dir, printed).
# --taskset-fio / --taskset-engine: pin fio / every engine thread (thread
# placement runs). --untraced-only: step 1 alone.
# Needs perf with tracepoints (root). Hold the benchmark lock:
#   flock /work/bench.lock bench/qd1_profile.sh --build=build/dev
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/cluster.sh"

build="$root/build/release" seconds=5 engine_flags= out= taskset_fio= taskset_engine= untraced_only=0
replicas=1
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --seconds=*) seconds="${arg#*=}" ;;
    --engine-flags=*) engine_flags="${arg#*=}" ;;
    --out=*) out="${arg#*=}" ;;
    --taskset-fio=*) taskset_fio="${arg#*=}" ;;
    --taskset-engine=*) taskset_engine="${arg#*=}" ;;
    --untraced-only) untraced_only=1 ;;
    --replicas=*) replicas="${arg#*=}" ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "qd1_profile: unknown argument $arg" >&2; exit 2 ;;
  esac
done
TANDEM_BUILD="$build"
tc_init qd1-profile
[ -n "$out" ] || out="$(mktemp -d /var/tmp/qd1-profile.XXXXXX)"
mkdir -p "$out"
command -v perf >/dev/null || tc_fail "perf is needed"

FIO=(fio)
[ -n "$taskset_fio" ] && FIO=(taskset -c "$taskset_fio" fio)
SIZE=256M
# --lat_percentiles: fio's io_uring engine counts the submitting io_uring_enter
# (with its virtio kick, ~15-20 us here) as slat, outside clat, while over
# NBD the engine's submit is inside clat; only lat (slat + clat) compares.
QD1=(--rw=randwrite --bs=4k --iodepth=1 --size=$SIZE --randrepeat=0 --norandommap --lat_percentiles=1)

engines=()
for ((i = 0; i < replicas; i++)); do
  engines+=("e$i")
  # shellcheck disable=SC2086
  start_engine "e$i" $engine_flags
done
vol="bench-r$replicas"
create_volume "$vol" $SIZE "${engines[@]}"
uri="$(volume_uri "$vol" e0)"
raw="$TC_RUN_DIR/raw.img"
fallocate -l $SIZE "$raw"
fio --name=fill --filename="$raw" --ioengine=io_uring --direct=1 --rw=write --bs=1M --iodepth=8 \
  --size=$SIZE --output=/dev/null
fio --name=fill --ioengine=nbd --uri="$uri" --rw=write --bs=1M --iodepth=8 --size=$SIZE \
  --output=/dev/null
pids=()
for e in "${engines[@]}"; do pids+=("$(engine_pid "$e")"); done
pid="${pids[0]}"
if [ -n "$taskset_engine" ]; then
  for p in "${pids[@]}"; do
    taskset -a -p -c "$taskset_engine" "$p" >/dev/null || tc_fail "taskset of the engine"
  done
fi
RAW=(--filename="$raw" --ioengine=io_uring --direct=1)
NBD=(--ioengine=nbd --uri="$uri")

busiest_tid() {  # busiest_tid PID...: the thread with the most CPU time over 0.5 s
  local t f
  snap() { for f in $(for p in "$@"; do echo /proc/"$p"/task/*/stat; done); do
      awk '{print $1, $14 + $15}' "$f" 2>/dev/null; done; }
  t="$(snap "$@")"
  sleep 0.5
  join <(echo "$t" | sort) <(snap "$@" | sort) | awk '{print $3 - $2, $1}' | sort -nr |
    head -n 1 | awk '{print $2}'
}
TRACE_EV=(-e sched:sched_switch -e sched:sched_wakeup -e block:block_rq_issue
  -e block:block_rq_complete)
trace_window() {  # trace_window FILE TID... : 0.5 s of the timeline events
  local file="$1"; shift
  local filter="" t
  for t in "$@"; do filter="${filter:+$filter || }common_pid == $t"; done
  perf record -a -q -o "$file.data" "${TRACE_EV[@]}" \
    -e raw_syscalls:sys_enter --filter "$filter" -e raw_syscalls:sys_exit --filter "$filter" \
    -- sleep 0.5 >/dev/null 2>&1
  perf script -i "$file.data" -F comm,tid,cpu,time,event,trace >"$file.txt" 2>/dev/null
}

# 1. untraced
tc_log "raw QD1 (${seconds}s)"
"${FIO[@]}" --name=raw "${RAW[@]}" "${QD1[@]}" --time_based --runtime="$seconds" --ramp_time=1 \
  --output-format=json --output="$out/raw.json"
tc_log "volume QD1 (${seconds}s)"
ctl e0 target get --volume="$vol" >"$out/stages-before.txt"
"${FIO[@]}" --name=vol "${NBD[@]}" "${QD1[@]}" --time_based --runtime="$seconds" --ramp_time=1 \
  --output-format=json --output="$out/vol.json"
ctl e0 target get --volume="$vol" >"$out/stages-after.txt"
python3 "$TC_LIB_DIR/stage_latency.py" diff "$out/stages-before.txt" "$out/stages-after.txt" \
  "$replicas-replica" "$replicas" randwrite-4k-qd1 1 >"$out/stages.tsv" 2>/dev/null || true

p50() {  # "clat p50 X / lat p50 Y" of a fio JSON
  python3 - "$1" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
d = json.loads(t[t.find("{"):])["jobs"][0]["write"]
q = lambda k: d[k]["percentile"]["50.000000"] / 1000 if "percentile" in d.get(k, {}) else 0
print(f"clat {q('clat_ns'):.1f} / lat {q('lat_ns'):.1f} (slat mean {d['slat_ns']['mean'] / 1000:.1f})")
PY
}
if [ $untraced_only = 1 ]; then
  echo "== fio p50 us: raw $(p50 "$out/raw.json"), volume $(p50 "$out/vol.json");" \
    "stages (count p50 p99 mean):" | tee "$out/report.txt"
  awk -F'\t' '{print "   " $5, $6, $7, $8, $9}' "$out/stages.tsv" | tee -a "$out/report.txt"
  exit 0
fi

# 2. counted, profiled and traced volume job
tc_log "volume QD1 under perf"
"${FIO[@]}" --name=volp "${NBD[@]}" "${QD1[@]}" --time_based --runtime=16 \
  --output-format=json --output="$out/volp.json" &
fio_pid=$!
sleep 1.5
ftid="$(busiest_tid $(pgrep -f -- --name=volp))"
etids=()  # each engine's loop thread (its busiest), e0 first
for p in "${pids[@]}"; do etids+=("$(busiest_tid "$p")"); done
etid="${etids[0]}"
{ ps -L -o pid,tid,psr,pcpu,comm -p "$(IFS=,; echo "${pids[*]}")"
  ps -L -o pid,tid,psr,pcpu,comm -p "$(pgrep -d, -f -- --name=volp)"; } >"$out/threads.txt"
ev=context-switches,cpu-migrations,task-clock,raw_syscalls:sys_enter
for s in epoll_wait read write readv writev recvfrom sendto sendmsg io_uring_enter ppoll poll; do
  ev="$ev,syscalls:sys_enter_$s"
done
perf stat -e "$ev" --per-thread -t "$(IFS=,; echo "${etids[*]}"),$ftid" -o "$out/stat.txt" -- sleep 3
perf record -q -F 4999 -g -p "$(IFS=,; echo "${pids[*]}")" -o "$out/cpu.data" -- sleep 3 >/dev/null 2>&1
trace_window "$out/vol-trace" "${etids[@]}" "$ftid"
wait "$fio_pid" || true

# 3. traced raw job
"${FIO[@]}" --name=rawt "${RAW[@]}" "${QD1[@]}" --time_based --runtime=3 --output=/dev/null &
fio_pid=$!
sleep 1.5
rtid="$(busiest_tid $(pgrep -f -- --name=rawt))"
trace_window "$out/raw-trace" "$rtid"
wait "$fio_pid" || true

# Report
# Shares of each engine's own samples (--percentage relative), no call chains.
# (--tid: perf report's --pid filter of a multi-process file keeps only the first.)
perf report -i "$out/cpu.data" -g none --no-children --sort pid,dso --stdio 2>/dev/null |
  grep '%' | head -n 16 >"$out/cpu-dso.txt" || true
for i in "${!pids[@]}"; do
  echo "-- e$i (loop tid ${etids[$i]})"
  perf report -i "$out/cpu.data" --tid="${etids[$i]}" --percentage relative -g none --no-children \
    --sort dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | grep '%' | head -n 25 || true
done >"$out/cpu-top.txt"
{
  echo "== fio p50 us (untraced): raw $(p50 "$out/raw.json"), volume $(p50 "$out/vol.json")"
  echo "== the target's stages over the volume job (stage count p50 p99 mean, us)"
  awk -F'\t' '{print "   " $5, $6, $7, $8, $9}' "$out/stages.tsv"
  echo "== threads (engine loop tids ${etids[*]} (e0 first), fio tid $ftid)"
  cat "$out/threads.txt"
  echo "== per I/O over 3 s of perf stat (I/Os = e0's sendmsg count / $replicas: the NBD reply and one send per remote replica)"
  python3 "$TC_LIB_DIR/qd1_timeline.py" stat "$out/stat.txt" "$etid" "$ftid" "${etids[@]:1}"
  echo "== per-I/O timeline, volume (traced: inflated)"
  if [ "$replicas" = 1 ]; then
    python3 "$TC_LIB_DIR/qd1_timeline.py" nbd "$out/vol-trace.txt" "$etid" "$ftid"
  else
    python3 "$TC_LIB_DIR/qd1_timeline.py" repl "$out/vol-trace.txt" "$ftid" "${etids[@]}"
  fi
  echo "== per-I/O timeline, raw (traced the same way)"
  python3 "$TC_LIB_DIR/qd1_timeline.py" raw "$out/raw-trace.txt" "$rtid"
  echo "== engine cpu profile: samples by thread and object (% of all engines' samples)"
  cat "$out/cpu-dso.txt"
  echo "== engine cpu profiles, top symbols (self), per engine loop"
  cat "$out/cpu-top.txt"
} | tee "$out/report.txt"
tc_log "kept in $out"
