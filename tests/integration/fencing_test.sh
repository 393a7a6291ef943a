#!/usr/bin/env bash
# Fencing: target A (epoch 1) on engine e0, then target B (epoch 2) for the
# same volume on engine e1, over the same three replicas. After B attached:
#   - every write through A fails (qemu-io and 300 verifier writes: none acked),
#   - none of A's post-fence data lands: reading through B finds A's pre-fence
#     pattern where it wrote before, and zeroes where A wrote after.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init fencing
require_engine_or_skip
: "${ACK_VERIFIER:?}"

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-f 64M e0 e1 e2
uri_a="$(volume_uri vol-f e0)"
qio() { qemu-io -f raw -c "$2" "$1" >>"$TC_RUN_DIR/qemu-io.log" 2>&1; }

qio "$uri_a" "write -P 0xa1 0 1M" || tc_fail "pre-fence write through A"
qio "$uri_a" "read -P 0xa1 0 1M" || tc_fail "pre-fence read through A"

ctl e1 target create --volume=vol-f --epoch=2 --replica="$(engine_addr e0)" \
  --replica="$(engine_addr e1):local" --replica="$(engine_addr e2)" --size=64M \
  >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "target B create (epoch 2) on e1"
wait_for "[ \"\$(target_state vol-f e1)\" = READY ]" 30 "target B READY"
uri_b="$(volume_uri vol-f e1)"

# A's writes after the fence: each must fail.
if qio "$uri_a" "write -P 0xf3 1M 1M"; then tc_fail "a write through fenced target A succeeded"; fi
"$ACK_VERIFIER" write --uri="$uri_a" --log="$TC_RUN_DIR/acks-a.log" --region=2M:1M --ops=300 \
  --qd=4 --allow-errors --io-timeout-ms=10000 >"$TC_RUN_DIR/ackv-a.out" 2>&1 && rc=0 || rc=$?
cat "$TC_RUN_DIR/ackv-a.out"
if [ $rc = 2 ] && grep -q 'UNAVAILABLE: connect' "$TC_RUN_DIR/ackv-a.out"; then
  echo "fenced target A refuses NBD connections"
else
  grep -q ' acked=0 failed=[1-9]' "$TC_RUN_DIR/ackv-a.out" || tc_fail "fenced target A acknowledged writes"
  ! grep -q STALLED "$TC_RUN_DIR/ackv-a.out" || tc_fail "writes through fenced target A hang instead of failing"
fi
a_state="$(target_state vol-f e0 || true)"
echo "target A state after the fence: $a_state"
[ "$a_state" != READY ] || tc_fail "fenced target A still READY"

# Through B: A's pre-fence data is there, nothing of A's post-fence writes.
qio "$uri_b" "read -P 0xa1 0 1M" || tc_fail "A's pre-fence data missing through B"
qio "$uri_b" "read -P 0 1M 2M" || tc_fail "data written through fenced target A landed on the replicas"
# And B itself works.
qio "$uri_b" "write -P 0xb2 4M 1M" || tc_fail "write through B"
qio "$uri_b" "read -P 0xb2 4M 1M" || tc_fail "read back through B"
echo "PASS: fenced target's writes fail and never land"
