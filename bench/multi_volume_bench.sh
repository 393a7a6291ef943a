#!/usr/bin/env bash
# Several volumes at once, tandem-engine --target-threads=1 against =2 (issue
# 12: "a benchmark with 2 volumes on 2 loops reports the aggregate"), in one run:
# one target engine per thread count ("t1", "t2", each also holding replica 0
# of its volumes) and, for more than one replica, the replica engines "r1"
# "r2" shared by both. Each job runs fio's nbd engine on every volume of one
# setting at once (one fio, one job per volume), settings back to back in
# alternating order (1 2, then 2 1, ...), and the whole set is repeated
# --rounds times; the table shows the aggregate IOPS (sum over the volumes),
# median and min..max over the rounds, the per-round ratio 2/1, and CPU per
# I/O (fio + every engine). The engine's log names the loop of each target.
#
#   bench/multi_volume_bench.sh [--build=DIR] [--seconds=N] [--size=SIZE]
#                               [--volumes=2] [--threads="1 2"] [--replicas="1 3"]
#                               [--jobs="randwrite-4k-qd32 randread-4k-qd32"]
#                               [--rounds=3] [--engine-flags="..."]
#
# Jobs are named as in bench/nbd_bench.sh (RW-BS-qdN). --engine-flags: extra
# flags for every engine (e.g. --target-loop=own). Runs under
# /var/tmp/tandem-multi-volume-bench.*, removed at exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/cluster.sh"
source "$root/scripts/lib/nbd_bench.sh"

build="$root/build/release" volumes=2 threads="1 2" replicas="1 3" rounds=3 engine_flags=
BENCH_SECONDS=3 BENCH_SIZE=256M BENCH_JOBS="randwrite-4k-qd32 randread-4k-qd32"
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --seconds=*) BENCH_SECONDS="${arg#*=}" ;;
    --size=*) BENCH_SIZE="${arg#*=}" ;;
    --volumes=*) volumes="${arg#*=}" ;;
    --threads=*) threads="${arg#*=}" ;;
    --replicas=*) replicas="${arg#*=}" ;;
    --jobs=*) BENCH_JOBS="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    --engine-flags=*) engine_flags="${arg#*=}" ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "multi_volume_bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done
TANDEM_BUILD="$build"
tc_init multi-volume-bench
engine_tests_possible || tc_fail "need $TANDEM_ENGINE (with --grpc-listen) and $TANDEMCTL; build them first"
TSV="$TC_RUN_DIR/multi.tsv"
: >"$TSV"

max_replicas=1
for n in $replicas; do [ "$n" -gt "$max_replicas" ] && max_replicas=$n; done
[ "$max_replicas" -le 3 ] || tc_fail "--replicas: at most 3"
# shellcheck disable=SC2086
for t in $threads; do start_engine "t$t" --target-threads="$t" $engine_flags; done
# shellcheck disable=SC2086
for ((i = 1; i < max_replicas; i++)); do start_engine "r$i" $engine_flags; done

# The volumes of setting T with N replicas: mv-tT-nN-vI, target on engine tT.
vol_name() { echo "mv-t$1-n$2-v$3"; }
declare -A URI=()
tc_log "preparing $volumes volumes per setting and replica count ($BENCH_SIZE each)"
for t in $threads; do
  for n in $replicas; do
    engines=("t$t" r1 r2)
    for ((v = 0; v < volumes; v++)); do
      vol="$(vol_name "$t" "$n" "$v")"
      create_volume "$vol" "$BENCH_SIZE" "${engines[@]:0:$n}"
      URI[$vol]="$(volume_uri "$vol" "t$t")"
      fio --name=fill --ioengine=nbd --uri="${URI[$vol]}" --rw=write --bs=1M --iodepth=8 \
        --size="$BENCH_SIZE" --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fill $vol"
    done
  done
  tc_log "engine t$t: $(grep -o "attached at epoch 1 on target loop [0-9]*" "$TC_RUN_DIR/t$t.log" |
    awk '{print $NF}' | sort | uniq -c | awk '{printf "%s target(s) on loop %s; ", $1, $2}')"
done

# run_set T N JOB ROUND: the job on every volume of setting T at once; appends
# "T N JOB ROUND aggregate_iops min_volume_iops max_volume_iops cpu_us_per_io".
run_set() {
  local t="$1" n="$2" job="$3" round="$4" v args=() pids
  for ((v = 0; v < volumes; v++)); do args+=(--name="v$v" --uri="${URI[$(vol_name "$t" "$n" "$v")]}"); done
  pids="$(engine_pid "t$t")"
  for ((v = 1; v < n; v++)); do pids="$pids $(engine_pid "r$v")"; done
  local json="$TC_RUN_DIR/t$t-n$n-$job-$round.json" before after
  # shellcheck disable=SC2086
  before="$(cpu_ticks $pids)"
  # shellcheck disable=SC2046
  fio --output-format=json --output="$json" --ioengine=nbd --time_based --runtime="$BENCH_SECONDS" \
    --ramp_time=1 --size="$BENCH_SIZE" --randrepeat=0 --norandommap $(_bench_job_args "$job") \
    "${args[@]}" 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fio $job on setting $t"
  # shellcheck disable=SC2086
  after="$(cpu_ticks $pids)"
  python3 "$TC_LIB_DIR/fio_json.py" check "$json" >/dev/null || tc_fail "fio $job on setting $t had errors"
  python3 - "$json" "$t" "$n" "$job" "$round" "$((after - before))" "$(getconf CLK_TCK)" >>"$TSV" <<'EOF'
import json, sys
path, t, n, job, rnd, ticks, hz = sys.argv[1:]
text = open(path).read()
jobs = json.loads(text[text.find("{"):])["jobs"]
iops, ios, fio_cpu, runtime = [], 0, 0.0, 0.0
for j in jobs:
    d = j["write"] if j["write"]["total_ios"] > 0 else j["read"]
    rt = j.get("job_runtime", d.get("runtime", 0)) / 1000.0
    iops.append(d["iops"]); ios += d["total_ios"]; runtime = max(runtime, rt)
    fio_cpu += (j.get("usr_cpu", 0.0) + j.get("sys_cpu", 0.0)) / 100.0 * rt
# The engines' ticks cover fio's ramp second too: scale them to the measured part.
engines = int(ticks) / float(hz) * runtime / (runtime + 1.0)
print(f"{t}\t{n}\t{job}\t{rnd}\t{sum(iops):.0f}\t{min(iops):.0f}\t{max(iops):.0f}\t"
      f"{(fio_cpu + engines) / max(ios, 1) * 1e6:.1f}")
EOF
  tc_log "$(tail -n 1 "$TSV" | awk '{printf "threads=%s replicas=%s %s round %s: aggregate %s IOPS (volumes %s..%s), cpu/io %s us", $1, $2, $3, $4, $5, $6, $7, $8}')"
}

for ((r = 1; r <= rounds; r++)); do
  order="$threads"
  # shellcheck disable=SC2086
  [ $((r % 2)) = 0 ] && order="$(printf '%s\n' $threads | tac | xargs)"
  tc_log "round $r of $rounds (${BENCH_SECONDS}s per job, settings in order: $order)"
  for job in $BENCH_JOBS; do
    for n in $replicas; do
      for t in $order; do run_set "$t" "$n" "$job" "$r"; done
    done
  done
done

echo
python3 - "$TSV" "$threads" <<'EOF'
import collections, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
settings = sys.argv[2].split()
agg = collections.defaultdict(dict)  # (n, job) -> {(t, round): (iops, min, max, cpu)}
for t, n, job, rnd, iops, lo, hi, cpu in rows:
    agg[(int(n), job)][(t, int(rnd))] = (float(iops), float(lo), float(hi), float(cpu))
base = settings[0]
print(f"| replicas | job | " + " | ".join(f"--target-threads={t} aggregate IOPS (min..max)"
                                          for t in settings) +
      " | " + " | ".join(f"{t}/{base} (min..max)" for t in settings[1:]) +
      " | " + " | ".join(f"cpu µs/IO t={t}" for t in settings) + " |")
print("|" + "---|" * (2 + 2 * len(settings) + len(settings) - 1))
for (n, job), m in sorted(agg.items()):
    rounds = sorted({r for _, r in m})
    cells, ratios, cpus = [], [], []
    for t in settings:
        v = [m[(t, r)][0] for r in rounds if (t, r) in m]
        cells.append(f"{statistics.median(v):.0f} ({min(v):.0f}..{max(v):.0f})")
        cpus.append(f"{statistics.median(m[(t, r)][3] for r in rounds if (t, r) in m):.1f}")
    for t in settings[1:]:
        q = [m[(t, r)][0] / m[(base, r)][0] for r in rounds if (t, r) in m and (base, r) in m]
        ratios.append(f"{statistics.median(q):.2f}× ({min(q):.2f}..{max(q):.2f})")
    print(f"| {n} | {job} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " | " +
          " | ".join(cpus) + " |")
EOF
