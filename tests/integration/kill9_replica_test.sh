#!/usr/bin/env bash
# kill -9 of one replica engine while fio (verify=crc32c) and the acknowledged-
# write verifier write through a 3-replica volume's NBD export:
#   - neither client sees an I/O error; fio's verify passes,
#   - every acknowledged write is read back (ack_verifier verify),
#   - the killed replica is FAULTED in the target, and once its engine is back
#     its generation is lower than the survivors'.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init kill9
require_engine_or_skip
: "${ACK_VERIFIER:?}"

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-k 256M e0 e1 e2
uri="$(volume_uri vol-k e0)"
victim_addr="$(engine_addr e2)"
gen0="$(ctl_field e0 generation target get --volume=vol-k)"

# fio on [0, 64M) (write + verify, 3 loops), the verifier on [128M, 192M).
fio_nbd_bg fio-verify "$uri" --rw=randwrite --bs=4k --size=64M --iodepth=16 --loops=3 \
  --verify=crc32c --do_verify=1 --verify_fatal=1
fio_pid="${TC_PID_OF[fio-verify]}"
tc_spawn ackv "$ACK_VERIFIER" write --uri="$uri" --log="$TC_RUN_DIR/acks.log" --region=128M:64M \
  --seconds=8 --qd=16 --io-timeout-ms=20000
ackv_pid="${TC_PID_OF[ackv]}"

sleep 2
kill -0 "$fio_pid" 2>/dev/null || tc_fail "fio ended before the kill (too fast?): nothing was tested"
kill -0 "$ackv_pid" 2>/dev/null || tc_fail "ack_verifier ended before the kill"
echo "kill -9 engine e2 ($victim_addr)"
kill9_engine e2

ackv_rc=0; wait_rc "$ackv_pid" 60 || ackv_rc=$?
[ "$ackv_rc" = 0 ] || tc_fail "ack_verifier write saw I/O errors (exit $ackv_rc)"
fio_rc=0; wait_rc "$fio_pid" 120 || fio_rc=$?
[ "$fio_rc" = 0 ] || tc_fail "fio exited $fio_rc"
fio_check "$TC_RUN_DIR/fio-verify.json"
cat "$TC_RUN_DIR/ackv.log"

"$ACK_VERIFIER" verify --uri="$uri" --log="$TC_RUN_DIR/acks.log" | tee "$TC_RUN_DIR/verify.out" ||
  tc_fail "acknowledged writes lost after kill -9 of a replica"

state="$(replica_state_in_target vol-k e0 "$victim_addr")"
[ "$state" = FAULTED ] || tc_fail "killed replica $victim_addr is '$state' in the target, want FAULTED"
gen_target="$(ctl_field e0 generation target get --volume=vol-k)"
[ "$gen_target" -gt "$gen0" ] || tc_fail "target generation $gen_target not bumped past $gen0"

restart_engine e2 --new-ports  # new ports: the target cannot reconnect and rebuild it
g0="$(ctl_field e0 generation replica get --volume=vol-k)"
g1="$(ctl_field e1 generation replica get --volume=vol-k)"
g2="$(ctl_field e2 generation replica get --volume=vol-k)"
echo "generations: e0=$g0 e1=$g1 e2(killed)=$g2"
[ -n "$g0" ] && [ -n "$g1" ] && [ -n "$g2" ] || tc_fail "replica get did not report generations"
[ "$g2" -lt "$g0" ] && [ "$g2" -lt "$g1" ] || tc_fail "killed replica's generation $g2 is not below the survivors' ($g0, $g1)"
echo "PASS: kill -9 of a replica: no I/O error, nothing lost, faulted replica's generation is lower"
