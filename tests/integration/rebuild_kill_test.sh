#!/usr/bin/env bash
# Rebuilds survive kill -9 of either end. A 384 MiB volume (256 MiB written)
# with a target on e0 over replicas on e1 and e2 (none local, so every replica
# can be killed without the target), rebuild rate 32 MiB/s:
#  (a) a fresh replica on e3 is added (FULL rebuild, checkpoints every 64 MiB);
#      e3 is killed -9 mid-rebuild, written to while down, and restarted on its
#      old ports: the rebuild resumes (rebuild.resumed_from > 0, fewer bytes
#      copied than a full copy) and completes; the writes made while it was
#      down are on it.
#  (b) a fresh replica on e4 is added; its source is killed -9 mid-rebuild: the
#      rebuild goes on from another HEALTHY replica (rebuild.source changes)
#      and completes; the killed source comes back and is rebuilt too.
# Afterwards all four replica files are identical.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init rebuild-kill
require_engine_or_skip

MiB=$((1 << 20))
for e in e0 e1 e2 e3 e4; do start_engine "$e"; done
for e in e1 e2; do
  ctl "$e" replica create --volume=vol-x --replica-id="vol-x-$e" --size=384M >>"$TC_RUN_DIR/ctl.log" 2>&1 ||
    tc_fail "replica create on $e"
done
ctl e0 target create --volume=vol-x --epoch=1 --size=384M --replica="$(engine_addr e1)" \
  --replica="$(engine_addr e2)" --rebuild-rate=32M --reconnect-interval-ms=200 \
  >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "target create"
wait_for "[ \"\$(target_state vol-x e0)\" = READY ]" 30 "vol-x READY"
uri="$(volume_uri vol-x e0)"
fio_nbd fill "$uri" --rw=write --bs=1M --size=256M --iodepth=8 || tc_fail "fio fill"
fio_check "$TC_RUN_DIR/fill.json" >/dev/null

# bytes_done_over V N: rebuild running and past N bytes.
bytes_done_over() {
  [ "$(target_field vol-x e0 rebuild.state)" = RUNNING ] &&
    [ "$(target_field vol-x e0 rebuild.bytes_done)" -gt "$1" ]
}

# ---- (a) kill the destination mid-rebuild ------------------------------------
a3="$(engine_addr e3)"
add_fresh_replica vol-x 384M e3 e0
wait_for "bytes_done_over $((80 * MiB))" 30 "e3's rebuild past 80 MiB (one checkpoint)"
echo "kill -9 e3 ($a3) at rebuild.bytes_done=$(target_field vol-x e0 rebuild.bytes_done)"
kill9_engine e3
wait_for "[ \"\$(replica_state_in_target vol-x e0 $a3)\" = FAULTED ]" 10 "e3 FAULTED"
# Below the checkpoint, while e3 is down: must reach e3 through the dirty maps.
qemu-io -f raw -c "write -P 0x5e 1M 64k" -c "write -P 0x5f 300M 64k" "$uri" \
  >>"$TC_RUN_DIR/qemu-io.log" 2>&1 || tc_fail "writes while e3 is down"
restart_engine e3
wait_for "[ \"\$(replica_state_in_target vol-x e0 $a3)\" = HEALTHY ]" 60 "e3 rebuilt to HEALTHY"
ctl e0 target get --volume=vol-x | grep '^rebuild' | tee "$TC_RUN_DIR/rebuild-a.out"
resumed="$(target_field vol-x e0 rebuild.resumed_from)"
copied="$(target_field vol-x e0 rebuild.bytes_copied)"
[ "$(target_field vol-x e0 rebuild.replica)" = "$a3" ] || tc_fail "last rebuild is not e3's"
[ "$(target_field vol-x e0 rebuild.state)" = DONE ] || tc_fail "e3's rebuild not DONE"
[ "$(target_field vol-x e0 rebuild.mode)" = FULL ] || tc_fail "e3's resumed rebuild is not FULL"
[ "$resumed" -ge $((64 * MiB)) ] || tc_fail "rebuild.resumed_from=$resumed, want >= one 64 MiB checkpoint"
[ "$copied" -lt $((256 * MiB)) ] || tc_fail "resumed rebuild copied $copied bytes: all over again"
echo "(a) e3 resumed from $resumed and copied $copied bytes"
wait_rebuilt vol-x e0 30

# ---- (b) kill the source mid-rebuild -----------------------------------------
a4="$(engine_addr e4)"
add_fresh_replica vol-x 384M e4 e0
wait_for "bytes_done_over $((32 * MiB))" 30 "e4's rebuild past 32 MiB"
src="$(target_field vol-x e0 rebuild.source)"
src_e=""
for e in e1 e2 e3; do [ "$(engine_addr "$e")" = "$src" ] && src_e="$e"; done
[ -n "$src_e" ] || tc_fail "rebuild.source '$src' is none of e1 e2 e3"
echo "kill -9 the source $src_e ($src) at rebuild.bytes_done=$(target_field vol-x e0 rebuild.bytes_done)"
kill9_engine "$src_e"
wait_for "[ \"\$(replica_state_in_target vol-x e0 $a4)\" = HEALTHY ]" 60 "e4 rebuilt to HEALTHY"
ctl e0 target get --volume=vol-x | grep '^rebuild' | tee "$TC_RUN_DIR/rebuild-b.out"
new_src="$(target_field vol-x e0 rebuild.source)"
[ "$(target_field vol-x e0 rebuild.replica)" = "$a4" ] || tc_fail "last rebuild is not e4's"
[ "$(target_field vol-x e0 rebuild.state)" = DONE ] || tc_fail "e4's rebuild not DONE"
[ -n "$new_src" ] && [ "$new_src" != "$src" ] || tc_fail "rebuild.source stayed '$new_src' after its kill"
[ "$(replica_state_in_target vol-x e0 "$src")" = FAULTED ] || tc_fail "killed source not FAULTED"
echo "(b) source $src killed; e4's rebuild finished from $new_src"

restart_engine "$src_e"
wait_rebuilt vol-x e0 60
qemu-io -f raw -c "read -P 0x5e 1M 64k" -c "read -P 0x5f 300M 64k" "$uri" \
  >>"$TC_RUN_DIR/qemu-io.log" 2>&1 || tc_fail "read back of the writes made while e3 was down"
nbd_flush "$uri"
same_replicas vol-x e1 e2 e3 e4
echo "PASS: a killed destination resumes from its checkpoint, a killed source is replaced; replicas identical"
