#!/usr/bin/env bash
# A full rebuild copies only allocated data: a 10 GiB 2-replica volume with
# 6 MiB written (in three places), then a fresh third replica added with
# `target add-replica`:
#   - the rebuild is FULL and copies at most 8 MiB (what is allocated on the
#     source, rounded to its file system's extents), not 10 GiB,
#   - it is done within 30 s, the target is READY and the new replica's file
#     is identical to the others (holes read as zeros).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init rebuild-sparse
require_engine_or_skip

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-s 10G e0 e1
uri="$(volume_uri vol-s e0)"
written=$((6 << 20))
qemu-io -f raw -c "write -P 0xa1 0 2M" -c "write -P 0xb2 4G 2M" -c "write -P 0xc3 $(((10 << 30) - (2 << 20))) 2M" \
  "$uri" >>"$TC_RUN_DIR/qemu-io.log" 2>&1 || tc_fail "writes"

start=$(date +%s%N)
add_fresh_replica vol-s 10G e2 e0
wait_rebuilt vol-s e0 30
took_ms=$((($(date +%s%N) - start) / 1000000))
ctl e0 target get --volume=vol-s | grep '^rebuild' | tee "$TC_RUN_DIR/rebuild.out"
mode="$(target_field vol-s e0 rebuild.mode)"
copied="$(target_field vol-s e0 rebuild.bytes_copied)"
[ "$(target_field vol-s e0 rebuild.replica)" = "$(engine_addr e2)" ] || tc_fail "rebuild.replica is not e2"
[ "$mode" = FULL ] || tc_fail "rebuild.mode=$mode, want FULL"
[ "$copied" -ge "$written" ] || tc_fail "rebuild.bytes_copied=$copied < the $written bytes written"
[ "$copied" -le $((8 << 20)) ] || tc_fail "rebuild.bytes_copied=$copied: more than the allocated ~$written bytes"
[ "$(replica_state_in_target vol-s e0 "$(engine_addr e2)")" = HEALTHY ] || tc_fail "e2 not HEALTHY"
echo "rebuild of a 10 GiB volume with $written bytes written: copied $copied bytes in ${took_ms} ms"

qemu-io -f raw -c "read -P 0xb2 4G 2M" -c "read -P 0 2M 2M" "$uri" >>"$TC_RUN_DIR/qemu-io.log" 2>&1 ||
  tc_fail "read back"
nbd_flush "$uri"
# Allocated bytes of the new replica's file: what was copied, not 10 GiB.
alloc_kib="$(du -k "$(replica_data_file vol-s e2)" | cut -f1)"
echo "new replica's file: $alloc_kib KiB allocated"
[ "$alloc_kib" -le $((16 * 1024)) ] || tc_fail "new replica's file has $alloc_kib KiB allocated"
same_replicas vol-s e0 e1 e2
echo "PASS: a fresh replica of a sparse 10 GiB volume copied $copied bytes in ${took_ms} ms"
