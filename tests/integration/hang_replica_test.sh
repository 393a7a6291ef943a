#!/usr/bin/env bash
# A replica that hangs (its engine SIGSTOPped) is FAULTED once the target's
# request timeout (--timeout-ms=1000) expires, and I/O goes on without it:
#   - the writer running across the hang sees no error,
#   - a writer started after the hang completes its writes,
#   - the target reports the hung replica FAULTED,
#   - every acknowledged write reads back (the engine is SIGCONTed at the end),
#   - once resumed, the replica is reconnected and rebuilt by the target on its
#     own (reconnects run every second while it is FAULTED; while the engine is
#     stopped they time out and it stays FAULTED), and the three replica files
#     are then identical.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init hang
require_engine_or_skip
: "${ACK_VERIFIER:?}"

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-h 128M e0 e1 e2 -- --timeout-ms=1000
uri="$(volume_uri vol-h e0)"
victim_addr="$(engine_addr e2)"
log="$TC_RUN_DIR/acks.log"

tc_spawn ackv1 "$ACK_VERIFIER" write --uri="$uri" --log="$log" --region=0:32M --seconds=6 --qd=8 \
  --io-timeout-ms=15000
ackv1_pid="${TC_PID_OF[ackv1]}"
sleep 1.5
kill -0 "$ackv1_pid" 2>/dev/null || tc_fail "writer ended before the hang"
echo "SIGSTOP engine e2 ($victim_addr)"
sigstop_engine e2
rc=0; wait_rc "$ackv1_pid" 60 || rc=$?
cat "$TC_RUN_DIR/ackv1.log"
[ $rc = 0 ] || tc_fail "writer across the hang exited $rc (I/O error or stall)"

# The hang outlasted the timeout: the replica is FAULTED and writes proceed.
wait_for "[ \"\$(replica_state_in_target vol-h e0 $victim_addr)\" = FAULTED ]" 10 \
  "hung replica $victim_addr FAULTED in the target"
# A fresh writer must not wait on the hung replica: 2000 writes, 5 s without progress fails it.
"$ACK_VERIFIER" write --uri="$uri" --log="$log" --region=32M:32M --ops=2000 --qd=8 \
  --io-timeout-ms=5000 | tee "$TC_RUN_DIR/ackv2.out" || tc_fail "writes after the hang failed"
grep -q 'acked=2000 failed=0' "$TC_RUN_DIR/ackv2.out" || tc_fail "not every write after the hang was acknowledged"
sigcont_engine e2
"$ACK_VERIFIER" verify --uri="$uri" --log="$log" | tee "$TC_RUN_DIR/verify.out" ||
  tc_fail "acknowledged writes lost around a hung replica"
wait_rebuilt vol-h e0 60
ctl e0 target get --volume=vol-h | grep -E '^rebuild\.(state|mode|replica|bytes_copied)='
[ "$(target_field vol-h e0 rebuild.replica)" = "$victim_addr" ] || tc_fail "the resumed replica was not rebuilt"
nbd_flush "$uri"
same_replicas vol-h e0 e1 e2
echo "PASS: hung replica faulted after the timeout, I/O continued, nothing lost, rebuilt once resumed"
