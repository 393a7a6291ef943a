#!/usr/bin/env bash
# End-to-end test of tests/tools/ack_verifier against qemu-nbd (no engine
# needed): two write runs through NBD verify clean; then, with the server
# stopped, the backing file is changed behind the verifier's back and verify
# must name every damaged block and exit non-zero:
#   - block X gets its stamp from before run 2 (an acknowledged write is LOST),
#   - block Z is zeroed (LOST: acknowledged, but nothing there),
#   - block Y has one byte flipped (CORRUPT: bad crc),
#   - block W gets the contents of block V (CORRUPT: misplaced).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=../../scripts/lib/cluster.sh
source "$here/../../scripts/lib/cluster.sh"
tc_init ackv
: "${ACK_VERIFIER:?set ACK_VERIFIER to the ack_verifier binary}"
command -v qemu-nbd >/dev/null || { echo "SKIP: qemu-nbd missing" >&2; exit 77; }

img="$TC_RUN_DIR/disk.img" sock="$TC_RUN_DIR/nbd.sock" log="$TC_RUN_DIR/acks.log"
uri="nbd+unix:///vol?socket=$sock"
truncate -s 32M "$img"

start_qemu() {
  rm -f "$sock"
  tc_spawn qemu-nbd qemu-nbd --socket="$sock" --format=raw --export-name=vol --cache=none \
    --aio=native --persistent --shared=8 "$img"
  wait_for "[ -S '$sock' ] && nbdinfo --size '$uri'" 10 "qemu-nbd socket"
}
stop_qemu() {
  local pid="${TC_PID_OF[qemu-nbd]}"
  kill -TERM "$pid"
  _wait_exit "$pid" 10 || tc_fail "qemu-nbd did not exit"
}
verify() { "$ACK_VERIFIER" verify --uri="$uri" --log="$log" --qd=8; }

start_qemu
"$ACK_VERIFIER" write --uri="$uri" --log="$log" --region=0:4M --ops=4000 --qd=16 --seed=1 \
  --verify-after-write | tee "$TC_RUN_DIR/run1.out" || tc_fail "run 1 write+verify"
grep -q ' lost=0 corrupt=0 ' "$TC_RUN_DIR/run1.out" || tc_fail "run 1 verify summary"
stop_qemu
cp "$img" "$TC_RUN_DIR/before-run2.img"
start_qemu
"$ACK_VERIFIER" write --uri="$uri" --log="$log" --region=0:4M --ops=4000 --qd=16 --seed=2 \
  | tee "$TC_RUN_DIR/run2.out" || tc_fail "run 2 write"
grep -q '^write: run=2 .* acked=4000 failed=0 ' "$TC_RUN_DIR/run2.out" || tc_fail "run 2 summary"
verify | tee "$TC_RUN_DIR/verify2.out" || tc_fail "verify after run 2 must pass"
stop_qemu

# Offsets acked in both runs (the snapshot holds an older valid stamp there),
# and offsets acked in run 2.
# (awk 'NR<=2', not head: head exits early, sort then dies of SIGPIPE and,
# under pipefail + set -e, the script ended silently now and then.)
both=($(awk '/^R /{run=$2} /^A /{seen[$2]=seen[$2] run} END{for (o in seen) if (seen[o] ~ /1/ && seen[o] ~ /2/) print o}' "$log" | sort -n | awk 'NR <= 2'))
run2=($(awk '/^R /{run=$2} /^A /&&run==2{print $2}' "$log" | sort -un))
[ ${#both[@]} -ge 2 ] && [ ${#run2[@]} -ge 10 ] || tc_fail "log does not have the offsets the test needs"
X=${both[0]}
pick() { local o; for o in "${run2[@]}"; do [ "$o" != "$X" ] && ! [[ " $* " == *" $o "* ]] && { echo "$o"; return; }; done; }
Z=$(pick); Y=$(pick "$Z"); W=$(pick "$Z" "$Y"); V=$(pick "$Z" "$Y" "$W")
echo "damaging: old stamp at $X, zeroes at $Z, flipped byte at $Y, block $V copied to $W"
dd if="$TC_RUN_DIR/before-run2.img" of="$img" bs=4096 skip=$((X / 4096)) seek=$((X / 4096)) count=1 conv=notrunc status=none
dd if=/dev/zero of="$img" bs=4096 seek=$((Z / 4096)) count=1 conv=notrunc status=none
byte=$(dd if="$img" bs=1 skip=$((Y + 100)) count=1 status=none | od -An -tu1 | tr -d ' ')
printf "\\$(printf '%03o' $(((byte + 1) % 256)))" | dd of="$img" bs=1 seek=$((Y + 100)) count=1 conv=notrunc status=none
dd if="$img" of="$img" bs=4096 skip=$((V / 4096)) seek=$((W / 4096)) count=1 conv=notrunc status=none

start_qemu
set +e
verify >"$TC_RUN_DIR/verify3.out"
rc=$?
set -e
cat "$TC_RUN_DIR/verify3.out"
[ $rc = 1 ] || tc_fail "verify of a damaged image exited $rc, want 1"
grep -q "^LOST offset=$X .*found_seq=" "$TC_RUN_DIR/verify3.out" || tc_fail "old stamp at $X not reported LOST"
grep -q "^LOST offset=$Z .*found UNWRITTEN" "$TC_RUN_DIR/verify3.out" || tc_fail "zeroed block $Z not reported LOST"
grep -q "^CORRUPT offset=$Y .*BAD_CRC" "$TC_RUN_DIR/verify3.out" || tc_fail "flipped byte at $Y not reported CORRUPT"
grep -q "^CORRUPT offset=$W .*misplaced: holds the stamp of offset $V" "$TC_RUN_DIR/verify3.out" ||
  tc_fail "copied block at $W not reported misplaced"
grep -q ' lost=2 corrupt=2 ' "$TC_RUN_DIR/verify3.out" || tc_fail "verify counted other damage too"
echo "PASS: ack_verifier detects lost and corrupt blocks through qemu-nbd"
