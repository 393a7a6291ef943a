#!/usr/bin/env bash
# Rebuild benchmark (issue 6), in one run on this machine. Three local
# tandem-engine processes; a volume of --data bytes, fully written, with
# replicas on e0 (local to the target) and e1; a fresh replica on e2 is added
# (FULL rebuild from e0's local replica), removed and re-added for each run:
#
#   raw copy        dd bs=1M iflag=direct oflag=direct of e0's replica file to a
#                   file in the same file system: the disk's sequential copy rate
#   full, idle      the rebuild alone: bytes copied / time to HEALTHY
#   load alone      fio 4 KiB randwrite QD16 through the 3-replica volume (all
#                   HEALTHY), for --load-seconds right before each loaded rebuild
#   full, loaded    the unthrottled rebuild while that load runs (until HEALTHY)
#   throttled       --rate (default 50M = 50 MiB/s) while that load runs
#   incremental     e2 killed -9, --degraded bytes written as 64 KiB blocks (each
#                   once, so bytes written = dirty 64 KiB regions), e2 restarted
#
# Prints one table: rebuild vs raw copy, load IOPS with vs without a rebuild,
# measured throttled rate vs the limit, incremental bytes copied vs written.
#
#   bench/rebuild_bench.sh [--build=DIR] [--data=2G] [--rate=50M] [--load-seconds=5]
#                          [--degraded=256M]
#
# --build: where tandem-engine and tandemctl are (default build/release).
# Needs about 5 x --data free under /var/tmp (checked first). Runtime with the
# defaults: about 2-3 minutes. Everything runs under /var/tmp/tandem-rebuild-bench.*
# and is removed at exit and on Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/lib/cluster.sh"

build="$root/build/release" data=2G rate=50M load_seconds=5 degraded=256M
for arg in "$@"; do
  case "$arg" in
    --build=*) build="${arg#*=}" ;;
    --data=*) data="${arg#*=}" ;;
    --rate=*) rate="${arg#*=}" ;;
    --load-seconds=*) load_seconds="${arg#*=}" ;;
    --degraded=*) degraded="${arg#*=}" ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "rebuild_bench: unknown argument $arg" >&2; exit 2 ;;
  esac
done
bytes() { numfmt --from=iec "$1"; }
data_b="$(bytes "$data")" degraded_b="$(bytes "$degraded")"
[ "$degraded_b" -le "$data_b" ] || { echo "rebuild_bench: --degraded above --data" >&2; exit 2; }
TANDEM_BUILD="$build"
TANDEM_ENGINE="$build/replica-engine/service/tandem-engine"
TANDEMCTL="$build/tools/tandemctl/tandemctl"
engine_tests_possible || { echo "rebuild_bench: need $TANDEM_ENGINE and $TANDEMCTL; build them first" >&2; exit 1; }
free_kib="$(df -Pk /var/tmp | awk 'NR == 2 { print $4 }')"
need_kib=$((data_b / 1024 * 5 + (1 << 20)))
[ "$free_kib" -ge "$need_kib" ] ||
  { echo "rebuild_bench: $((free_kib >> 20)) GiB free under /var/tmp, need $((need_kib >> 20)) GiB for --data=$data" >&2; exit 1; }

tc_init rebuild-bench
RESULTS="$TC_RUN_DIR/results"
: >"$RESULTS"
result() { echo "$1=$2" >>"$RESULTS"; }
now_ns() { date +%s%N; }

for e in e0 e1 e2; do start_engine "$e"; done
vol="vol-rb"
create_volume "$vol" "$data" e0 e1
uri="$(volume_uri "$vol" e0)"
a2="$(engine_addr e2)"
tc_log "filling $data through the export (2 replicas)"
fio_nbd fill "$uri" --rw=write --bs=1M --iodepth=8 --size="$data" || tc_fail "fio fill"
fio_check "$TC_RUN_DIR/fill.json" >/dev/null
nbd_flush "$uri"

# ---- raw sequential copy -------------------------------------------------------
src_file="$(replica_data_file "$vol" e0)"
tc_log "raw copy: dd of $src_file ($data)"
t0="$(now_ns)"
dd if="$src_file" of="$TC_RUN_DIR/raw-copy" bs=1M iflag=direct oflag=direct status=none ||
  tc_fail "dd raw copy"
t1="$(now_ns)"
result raw_bytes "$data_b"
result raw_ns $((t1 - t0))
rm -f "$TC_RUN_DIR/raw-copy"

# rebuild_e2 NAME: adds a fresh replica on e2 and waits (10 min) until it is
# HEALTHY; records NAME_ns (add to HEALTHY) and NAME_copied (rebuild.bytes_copied).
rebuild_e2() {
  local name="$1" t0 t1
  ctl e2 replica delete --volume="$vol" >>"$TC_RUN_DIR/ctl.log" 2>&1 || true
  t0="$(now_ns)"
  add_fresh_replica "$vol" "$data" e2 e0
  wait_for "[ \"\$(replica_state_in_target $vol e0 $a2)\" = HEALTHY ]" 600 "e2 rebuilt ($name)"
  t1="$(now_ns)"
  [ "$(target_field "$vol" e0 rebuild.state)" = DONE ] || tc_fail "$name: rebuild.state not DONE"
  [ "$(target_field "$vol" e0 rebuild.replica)" = "$a2" ] || tc_fail "$name: last rebuild is not e2's"
  result "${name}_ns" $((t1 - t0))
  result "${name}_copied" "$(target_field "$vol" e0 rebuild.bytes_copied)"
  result "${name}_mode" "$(target_field "$vol" e0 rebuild.mode)"
  tc_log "$name: $(grep "^${name}_" "$RESULTS" | tr '\n' ' ')"
}
remove_e2() {
  ctl e0 target remove-replica --volume="$vol" --replica="$a2" >>"$TC_RUN_DIR/ctl.log" 2>&1 ||
    tc_fail "remove-replica e2"
  wait_for "[ \"\$(target_state $vol e0)\" = READY ]" 30 "$vol READY without e2"
}
# The load: 4 KiB random writes at QD16 over the whole volume, time based.
LOAD_ARGS=(--rw=randwrite --bs=4k --iodepth=16 --size="$data" --time_based --randrepeat=0
  --norandommap)
# load_start NAME / load_stop NAME: fio in the background, stopped with SIGTERM
# (fio then writes its JSON); records NAME_iops.
load_start() { fio_nbd_bg "$1" "$uri" "${LOAD_ARGS[@]}" --runtime=900; sleep 0.5; }
load_stop() {
  local pid="${TC_PID_OF[$1]}"
  kill -0 "$pid" 2>/dev/null || tc_fail "load $1 ended early"
  kill -TERM "$pid"
  wait_rc "$pid" 30 || true  # fio exits non-zero on SIGTERM; its JSON is checked
  fio_check "$TC_RUN_DIR/$1.json" >/dev/null
  result "$1_iops" "$(python3 "$TC_LIB_DIR/fio_json.py" stats "$TC_RUN_DIR/$1.json" | cut -d' ' -f1)"
}

# load_alone NAME: the load for --load-seconds on the 3-replica volume, every
# replica HEALTHY: the baseline, measured right before each loaded rebuild
# (other work on a shared machine moves the numbers over minutes).
load_alone() {
  tc_log "load alone (${load_seconds}s, 3 replicas HEALTHY)"
  fio_nbd "$1" "$uri" "${LOAD_ARGS[@]}" --runtime="$load_seconds" || tc_fail "fio load alone"
  fio_check "$TC_RUN_DIR/$1.json" >/dev/null
  result "$1_iops" "$(python3 "$TC_LIB_DIR/fio_json.py" stats "$TC_RUN_DIR/$1.json" | cut -d' ' -f1)"
}

tc_log "full rebuild, idle"
rebuild_e2 full_idle

load_alone base_full
tc_log "full rebuild under load"
remove_e2
load_start load_full
rebuild_e2 full_load
load_stop load_full

tc_log "throttled rebuild ($rate/s) under load"
ctl e0 target set-rate --volume="$vol" --rate="$rate" >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "set-rate"
result rate_limit "$(target_field "$vol" e0 rebuild.rate_limit_bytes_per_sec)"
load_alone base_throttled
remove_e2
load_start load_throttled
rebuild_e2 throttled
load_stop load_throttled
ctl e0 target set-rate --volume="$vol" --rate=0 >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "set-rate 0"

tc_log "incremental: kill -9 e2, $degraded in 64 KiB blocks, restart"
wait_rebuilt "$vol" e0 60
kill9_engine e2
wait_for "[ \"\$(replica_state_in_target $vol e0 $a2)\" = FAULTED ]" 10 "e2 FAULTED"
# Each 64 KiB block of [0, degraded) written exactly once (fio's random map).
fio_nbd degraded "$uri" --rw=randwrite --bs=64k --iodepth=16 --size="$degraded" ||
  tc_fail "fio degraded writes"
fio_check "$TC_RUN_DIR/degraded.json" >/dev/null
result degraded_written "$(python3 - "$TC_RUN_DIR/degraded.json" <<'PY'
import json, sys
t = open(sys.argv[1]).read(); print(json.loads(t[t.find("{"):])["jobs"][0]["write"]["io_bytes"])
PY
)"
t0="$(now_ns)"
restart_engine e2
wait_rebuilt "$vol" e0 600
t1="$(now_ns)"
[ "$(target_field "$vol" e0 rebuild.replica)" = "$a2" ] || tc_fail "incremental: last rebuild is not e2's"
result incremental_ns $((t1 - t0))
result incremental_copied "$(target_field "$vol" e0 rebuild.bytes_copied)"
result incremental_mode "$(target_field "$vol" e0 rebuild.mode)"
nbd_flush "$uri"
tc_log "checking the three replicas are identical"
same_replicas "$vol" e0 e1 e2 >"$TC_RUN_DIR/same.out"
cat "$TC_RUN_DIR/same.out" >&2

echo
python3 "$TC_LIB_DIR/rebuild_table.py" "$RESULTS"
