#!/usr/bin/env bash
# Online rebuild under load. A 3-replica 256 MiB volume (rebuild rate 16 MiB/s,
# so the rebuild takes seconds); fio (randwrite, verify=crc32c) on [0, 64M) and
# the acknowledged-write verifier on [128M, 192M) write through the export;
# engine e2 is killed -9, and restarted on its old ports 2 s later; the target
# reconnects and rebuilds it while both writers go on:
#   - the rebuild of e2 runs while the writers run, and completes,
#   - neither writer sees an I/O error; fio's verify passes,
#   - every acknowledged write reads back (ack_verifier verify),
#   - the three replica files are byte-identical afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init rebuild-load
require_engine_or_skip
: "${ACK_VERIFIER:?}"

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-l 256M e0 e1 e2 -- --rebuild-rate=16M --reconnect-interval-ms=200
uri="$(volume_uri vol-l e0)"
victim="$(engine_addr e2)"

fio_nbd_bg fio-verify "$uri" --rw=randwrite --bs=4k --size=64M --iodepth=16 --loops=4 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
fio_pid="${TC_PID_OF[fio-verify]}"
tc_spawn ackv "$ACK_VERIFIER" write --uri="$uri" --log="$TC_RUN_DIR/acks.log" --region=128M:64M \
  --seconds=16 --qd=16 --io-timeout-ms=20000
ackv_pid="${TC_PID_OF[ackv]}"

sleep 2
kill -0 "$ackv_pid" 2>/dev/null || tc_fail "ack_verifier ended before the kill"
echo "kill -9 engine e2 ($victim)"
kill9_engine e2
sleep 2
echo "restart engine e2 on its old ports"
restart_engine e2
wait_for "[ \"\$(replica_state_in_target vol-l e0 $victim)\" = REBUILDING ]" 15 "e2 REBUILDING"
kill -0 "$ackv_pid" 2>/dev/null || tc_fail "the writer ended before the rebuild started: not under load"
echo "rebuild of e2 running under load: $(ctl e0 target get --volume=vol-l | grep -E '^rebuild\.(mode|bytes_total|bytes_done)=' | tr '\n' ' ')"
fio_alive=0; kill -0 "$fio_pid" 2>/dev/null && fio_alive=1

ackv_rc=0; wait_rc "$ackv_pid" 90 || ackv_rc=$?
[ "$ackv_rc" = 0 ] || tc_fail "ack_verifier write saw I/O errors (exit $ackv_rc)"
fio_rc=0; wait_rc "$fio_pid" 180 || fio_rc=$?
[ "$fio_rc" = 0 ] || tc_fail "fio exited $fio_rc"
fio_check "$TC_RUN_DIR/fio-verify.json"
cat "$TC_RUN_DIR/ackv.log"
echo "fio was still running when the rebuild started: $([ $fio_alive = 1 ] && echo yes || echo no)"

wait_rebuilt vol-l e0 90
ctl e0 target get --volume=vol-l | grep -E '^(rebuild|replica\.[0-9]\.state)' | tee "$TC_RUN_DIR/rebuild.out"
[ "$(target_field vol-l e0 rebuild.replica)" = "$victim" ] || tc_fail "last rebuild is not e2's"
[ "$(target_field vol-l e0 errors)" = 0 ] || tc_fail "the target reports errors to clients"
"$ACK_VERIFIER" verify --uri="$uri" --log="$TC_RUN_DIR/acks.log" | tee "$TC_RUN_DIR/verify.out" ||
  tc_fail "acknowledged writes lost across the rebuild"
nbd_flush "$uri"
same_replicas vol-l e0 e1 e2
echo "PASS: rebuild under load: no I/O error, nothing lost, replicas identical"
