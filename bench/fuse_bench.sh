#!/usr/bin/env bash
# FUSE file export benchmark, in one run on this machine (as root):
#   raw           fio io_uring, O_DIRECT, on a file in this filesystem (the baseline)
#   loop(raw)     the same file attached with losetup --direct-io=on: what loop costs
#   loop(fuse)    /dev/loopN over the FUSE file export of an in-memory device
#                 (bench/memory_export): loop + FUSE + the export's hand-off to
#                 the device loop, with no disk and no replication behind it
#   nbd           fio's nbd engine on the NBD export of the same in-memory device:
#                 the other frontend, for "what FUSE + loop costs vs NBD"
# With --volumes (needs tandem-engine and tandemctl in --build): three local
# engines, and for 1 and 3 replicas one volume exported as a FUSE file (fio on
# its /dev/loopN) and one exported over NBD (fio's nbd engine):
#   vN_fuse, vN_nbd  the whole data path, the frontend being the only difference
# Jobs: 4 KiB randwrite and randread at QD1 and QD32 (fio io_uring, direct=1,
# except nbd). Every job runs on every row back to back, so a ratio compares
# runs seconds apart (the machine is shared and noisy).
# Prints IOPS, p50/p99 completion latency, fio's and the export process's CPU per
# I/O, and IOPS relative to raw.
#
#   bench/fuse_bench.sh [--build=DIR] [--seconds=N] [--size=SIZE] [--dir=DIR] [--volumes]
#
# --build: where bench/memory_export is (default build/release, then build/dev).
# --seconds: per job (default 5). --size: file/device size (default 1G).
# --dir: where the raw file and the mount go (default /var/tmp).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="" seconds=5 size=1G base=/var/tmp volumes=0
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --seconds=*) seconds="${arg#*=}" ;;
    --size=*) size="${arg#*=}" ;;
    --dir=*) base="${arg#*=}" ;;
    --volumes) volumes=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "fuse_bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$build" ]; then
  for b in "$root/build/release" "$root/build/dev"; do
    [ -x "$b/bench/memory_export" ] && build="$b" && break
  done
fi
tool="$build/bench/memory_export"
[ -x "$tool" ] || { echo "fuse_bench: build bench/memory_export first (cmake --build <dir> --target memory_export)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "fuse_bench: needs root (FUSE mount, losetup)" >&2; exit 1; }
for t in fio losetup python3; do command -v $t >/dev/null || { echo "fuse_bench: $t missing" >&2; exit 1; }; done

work="$(mktemp -d "$base/tandem-fuse-bench.XXXXXX")"
pid="" loop_fuse="" loop_raw=""
declare -A vol_loop=()
cleanup() {
  local rc=$?
  set +e
  for l in "${vol_loop[@]}"; do losetup -d "$l"; done
  [ -n "$loop_fuse" ] && losetup -d "$loop_fuse"
  [ -n "$loop_raw" ] && losetup -d "$loop_raw"
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; timeout 30 tail --pid="$pid" -f /dev/null; fi
  rm -rf "$work"
  if [ $volumes = 1 ]; then (exit $rc); tc_cleanup; fi
}
if [ $volumes = 1 ]; then
  TANDEM_BUILD="$build"
  source "$root/scripts/lib/cluster.sh"
  tc_init fuse-bench
  engine_tests_possible || { echo "fuse_bench: --volumes needs tandem-engine and tandemctl in $build" >&2; exit 1; }
fi
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "fuse_bench: preparing $size raw file and the in-memory export under $work" >&2
"$tool" --fuse-dir="$work/fuse" --nbd-socket="$work/nbd.sock" --size="$size" \
  >"$work/export.out" 2>"$work/export.log" &
pid=$!
for _ in $(seq 1 100); do grep -q '^ready' "$work/export.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$work/export.out" || { cat "$work/export.log" >&2; exit 1; }
file="$(sed -n 's/^ready file=\([^ ]*\) .*/\1/p' "$work/export.out")"
loop_fuse="$(losetup --direct-io=on --sector-size 4096 --find --show "$file")"
# The raw file is written once so reads hit allocated blocks, not holes.
fio --name=fill --filename="$work/raw.img" --size="$size" --rw=write --bs=1M --direct=1 \
  --ioengine=io_uring --iodepth=8 --output=/dev/null
loop_raw="$(losetup --direct-io=on --sector-size 4096 --find --show "$work/raw.img")"
dd if=/dev/zero of="$loop_fuse" bs=1M count=64 oflag=direct status=none

rows="raw loop_raw loop_fuse nbd"
if [ $volumes = 1 ]; then
  for e in e0 e1 e2; do start_engine "$e"; done
  for n in 1 3; do
    engines=(e0 e1 e2)
    echo "fuse_bench: $n-replica volumes (FUSE file and NBD), $size each" >&2
    create_volume "v${n}f" "$size" "${engines[@]:0:$n}" -- --export=fuse-file
    create_volume "v${n}n" "$size" "${engines[@]:0:$n}"
    f="$(ctl_field e0 export_path target get --volume="v${n}f")"
    vol_loop[v${n}_fuse]="$(losetup --direct-io=on --sector-size 4096 --find --show "$f")"
    # Written once, so reads are served from allocated data on every row.
    fio --name=fill --filename="${vol_loop[v${n}_fuse]}" --size="$size" --rw=write --bs=1M \
      --direct=1 --ioengine=io_uring --iodepth=8 --output=/dev/null
    fio --name=fill --ioengine=nbd "--uri=$(volume_uri "v${n}n" e0)" --size="$size" --rw=write \
      --bs=1M --iodepth=8 --output=/dev/null
    rows="$rows v${n}_fuse v${n}_nbd"
  done
fi

run() {  # run <row> <job> <qd> -> json file
  local row=$1 job=$2 qd=$3 target
  local -a args=(--name=j --rw="$job" --bs=4k --iodepth="$qd" --time_based --runtime="$seconds"
                 --size="$size" --randrepeat=0 --output-format=json --output="$work/$row.$job.$qd.json")
  case "$row" in
    raw) args+=(--ioengine=io_uring --direct=1 --filename="$work/raw.img") ;;
    loop_raw) args+=(--ioengine=io_uring --direct=1 --filename="$loop_raw") ;;
    loop_fuse) args+=(--ioengine=io_uring --direct=1 --filename="$loop_fuse") ;;
    nbd) args+=(--ioengine=nbd "--uri=nbd+unix:///memory?socket=$work/nbd.sock") ;;
    v?_fuse) args+=(--ioengine=io_uring --direct=1 --filename="${vol_loop[$row]}") ;;
    v?_nbd) args+=(--ioengine=nbd "--uri=$(volume_uri "${row:0:2}n" e0)") ;;
  esac
  local t0 t1
  t0=$(ticks)
  fio "${args[@]}" >/dev/null
  t1=$(ticks)
  echo $((t1 - t0)) >"$work/$row.$job.$qd.ticks"
}
# utime+stime of memory_export (clock ticks): the export's CPU.
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

for job in randwrite randread; do
  for qd in 1 32; do
    for row in $rows; do
      echo "fuse_bench: $job QD$qd on $row (${seconds}s)" >&2
      run "$row" "$job" "$qd"
    done
  done
done

python3 - "$work" "$rows" <<'EOF'
import json, sys
work, rows = sys.argv[1], sys.argv[2].split()
import os
hz = os.sysconf("SC_CLK_TCK")
print(f"{'job':<15}{'row':<11}{'IOPS':>10}{'p50 us':>9}{'p99 us':>9}{'fio CPU us/IO':>15}"
      f"{'export CPU us/IO':>18}{'x raw':>8}")
for job in ("randwrite", "randread"):
    for qd in (1, 32):
        base = None
        for row in rows:
            d = json.load(open(f"{work}/{row}.{job}.{qd}.json"))["jobs"][0]
            side = d["write"] if job == "randwrite" else d["read"]
            iops = side["iops"]
            pct = side["clat_ns"].get("percentile", {})
            p50 = pct.get("50.000000", 0) / 1000
            p99 = pct.get("99.000000", 0) / 1000
            ios = side["total_ios"] or 1
            cpu = (d["usr_cpu"] + d["sys_cpu"]) / 100 * d["job_runtime"] * 1000 / ios
            ticks = int(open(f"{work}/{row}.{job}.{qd}.ticks").read())
            export_cpu = f"{ticks / hz * 1e6 / ios:.1f}" if row in ("loop_fuse", "nbd") else "-"
            if base is None:
                base = iops
            print(f"{job + ' QD' + str(qd):<15}{row:<11}{iops:>10.0f}{p50:>9.1f}{p99:>9.1f}"
                  f"{cpu:>15.1f}{export_cpu:>18}{iops / base:>8.2f}")
print("raw: fio io_uring O_DIRECT on a file here; loop_raw: that file via losetup --direct-io;")
print("loop_fuse: /dev/loopN over the FUSE file export of an in-memory device; nbd: fio's nbd")
print("engine on the NBD export of the same device. export CPU: memory_export's utime+stime")
print("(the FUSE workers + loop thread, or the NBD loop); the kernel's loop/FUSE work is not in it.")
if any(r.startswith("v") for r in rows):
    print("vN_fuse / vN_nbd: an N-replica volume on local tandem-engines, exported as a FUSE file")
    print("(fio on its /dev/loopN) or over NBD (fio's nbd engine); engine CPU is not counted here.")
EOF
