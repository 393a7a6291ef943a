#!/usr/bin/env bash
# Two tandem-engine binaries against each other in one run, interleaved: each
# holds a 1-replica volume (target and replica in-process); every round runs
# each job on raw io_uring, then on the two volumes, the order of the two
# alternating from round to round, so both see the same minutes of this
# shared machine. Prints per job the median over rounds of p50, IOPS, the
# ratios within each round (new / old, each / raw) and the target's replica
# stage p50, with min..max; and fio's lat p50 gap (slat + clat: raw io_uring
# counts its submit as slat, the volume's submit is inside clat).
#
#   bench/engine_ab.sh --old=BUILD_DIR --new=BUILD_DIR [--seconds=N] [--rounds=N]
#                      [--jobs="randwrite-4k-qd1 ..."] [--old-flags=..] [--new-flags=..]
#
# BUILD_DIR holds replica-engine/service/tandem-engine and tools/tandemctl/tandemctl
# (copy a build aside before changing the tree). Hold the benchmark lock:
#   flock /work/bench.lock bench/engine_ab.sh --old=/tmp/old --new=build/dev
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/cluster.sh"
source "$root/scripts/lib/nbd_bench.sh"

old= new= old_flags= new_flags= rounds=6
BENCH_SECONDS=3 BENCH_SIZE=256M BENCH_JOBS="randwrite-4k-qd1"
for arg in "$@"; do
  case "$arg" in
    --old=*) old="${arg#*=}" ;;
    --new=*) new="${arg#*=}" ;;
    --old-flags=*) old_flags="${arg#*=}" ;;
    --new-flags=*) new_flags="${arg#*=}" ;;
    --seconds=*) BENCH_SECONDS="${arg#*=}" ;;
    --rounds=*) rounds="${arg#*=}" ;;
    --jobs=*) BENCH_JOBS="${arg#*=}" ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "engine_ab: unknown argument $arg" >&2; exit 2 ;;
  esac
done
[ -n "$old" ] && [ -n "$new" ] || { echo "engine_ab: --old and --new are required" >&2; exit 2; }
TANDEM_BUILD="$new"
tc_init engine-ab
bench_init

declare -A URI PID
for v in old new; do
  dir="$old" flags="$old_flags"
  [ $v = new ] && dir="$new" flags="$new_flags"
  TANDEM_ENGINE="$dir/replica-engine/service/tandem-engine"
  TANDEMCTL="$dir/tools/tandemctl/tandemctl"
  # shellcheck disable=SC2086
  start_engine "$v" $flags
  create_volume "ab-$v" "$BENCH_SIZE" "$v"
  URI[$v]="$(volume_uri "ab-$v" "$v")"
  PID[$v]="$(engine_pid "$v")"
  fio --name=fill --ioengine=nbd --uri="${URI[$v]}" --rw=write --bs=1M --iodepth=8 \
    --size="$BENCH_SIZE" --output=/dev/null 2>>"$TC_RUN_DIR/bench-fio.log" || tc_fail "fill ab-$v"
done
bench_prepare_raw

volume_job() {  # volume_job V JOB: one job on engine V's volume, with its stage p50
  local v="$1" job="$2" b="$TC_RUN_DIR/st-before" a="$TC_RUN_DIR/st-after"
  ctl "$v" target get --volume="ab-$v" >"$b"
  _bench_run "$v" 1 "$job" "${PID[$v]}" -- --ioengine=nbd --uri="${URI[$v]}" --lat_percentiles=1
  ctl "$v" target get --volume="ab-$v" >"$a"
  python3 "$TC_LIB_DIR/stage_latency.py" diff "$b" "$a" "$v" 1 "$job" "$BENCH_ROUND" \
    >>"$BENCH_STAGES_TSV" 2>/dev/null || true
}

for ((r = 1; r <= rounds; r++)); do
  BENCH_ROUND=$r
  order="old new"
  [ $((r % 2)) = 0 ] && order="new old"
  for job in $BENCH_JOBS; do
    _bench_run raw 0 "$job" "" -- --filename="$BENCH_RAW_FILE" --ioengine=io_uring --direct=1 \
      --lat_percentiles=1
    for v in $order; do volume_job "$v" "$job"; done
  done
done

python3 - "$BENCH_TSV" "$BENCH_STAGES_TSV" "$TC_RUN_DIR" <<'EOF'
import json
import statistics as st
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def lat_p50(label, job, rnd):  # fio's lat (slat + clat) p50: raw io_uring's slat is its submit
    try:
        t = open(f"{sys.argv[3]}/bench-{label}-{job}-{rnd}.json").read()
        j = json.loads(t[t.find("{"):])["jobs"][0]
        d = j["write"] if j["write"]["total_ios"] > 0 else j["read"]
        return d["lat_ns"]["percentile"]["50.000000"] / 1000
    except (OSError, KeyError, ValueError):
        return None
stages = [l.rstrip("\n").split("\t") for l in open(sys.argv[2]) if l.strip()]
by = {}  # (job, round) -> label -> (iops, p50, cpu_engine)
for r in rows:
    by.setdefault((r[2], r[8]), {})[r[0]] = (float(r[3]), float(r[4]), float(r[10]))
rep = {}
for s in stages:  # label replicas job round stage count p50 p99 mean
    if s[4].endswith(".replica"):
        rep[(s[2], s[3], s[0])] = float(s[6])
def fmt(xs):
    return f"{st.median(xs):8.2f} ({min(xs):.2f}..{max(xs):.2f})"
for job in sorted({k[0] for k in by}):
    rs = [(k[1], v) for k, v in by.items() if k[0] == job and {"raw", "old", "new"} <= v.keys()]
    print(f"== {job}: {len(rs)} rounds, medians (min..max)")
    for lab in ("raw", "old", "new"):
        print(f"  {lab:4s} p50 us {fmt([v[lab][1] for _, v in rs])}   IOPS {fmt([v[lab][0] for _, v in rs])}"
              + ("" if lab == "raw" else f"   engine CPU us/IO {fmt([v[lab][2] for _, v in rs])}"))
    lat = {(r, lab): lat_p50(lab, job, r) for r, _ in rs for lab in ("raw", "old", "new")}
    if all(x is not None for x in lat.values()):
        for lab in ("old", "new"):
            print(f"  {lab} lat p50 - raw lat p50 us (slat + clat) "
                  f"{fmt([lat[(r, lab)] - lat[(r, 'raw')] for r, _ in rs])}")
    for lab in ("old", "new"):
        print(f"  {lab} p50 - raw p50 us {fmt([v[lab][1] - v['raw'][1] for _, v in rs])}"
              f"   IOPS x raw {fmt([v[lab][0] / v['raw'][0] for _, v in rs])}")
        xs = [rep[(job, r, lab)] for r, _ in rs if (job, r, lab) in rep]
        if xs:
            print(f"  {lab} replica stage p50 us {fmt(xs)}")
    print(f"  new/old p50 {fmt([v['new'][1] / v['old'][1] for _, v in rs])}"
          f"   new/old IOPS {fmt([v['new'][0] / v['old'][0] for _, v in rs])}")
EOF
bench_cleanup
