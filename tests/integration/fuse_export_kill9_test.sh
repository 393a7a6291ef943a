#!/usr/bin/env bash
# A 3-replica volume exported as a FUSE file (target create --export=fuse-file),
# attached with losetup --direct-io=on, formatted ext4 and mounted; files are
# written and fsync'd while one replica engine is killed with -9:
#   - no write or fsync fails (the application sees no error),
#   - every file fsync'd before, during and after the kill has its checksum,
#     also after umount + mount (read back from the volume, not a cache),
#   - fsck finds the filesystem clean, and the killed replica is FAULTED.
# Needs root (FUSE mount, loop devices); skips (77) without them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init fuse-kill9
require_engine_or_skip
if [ "$(id -u)" != 0 ] || [ ! -c /dev/fuse ]; then echo "SKIP: needs root and /dev/fuse" >&2; exit 77; fi
for t in losetup mkfs.ext4 fsck.ext4 sha256sum; do
  command -v $t >/dev/null || { echo "SKIP: $t missing" >&2; exit 77; }
done

mnt="$TC_RUN_DIR/mnt"
loopdev=""
# Unmount and detach before tc_cleanup stops the engines (it keeps $?).
fuse_cleanup() {
  local rc=$?
  if mountpoint -q "$mnt" 2>/dev/null; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
  (exit $rc)
  tc_cleanup
}
trap fuse_cleanup EXIT

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-f 1G e0 e1 e2 -- --export=fuse-file
kind="$(ctl_field e0 export_kind target get --volume=vol-f)"
file="$(ctl_field e0 export_path target get --volume=vol-f)"
[ "$kind" = FUSE_FILE ] || tc_fail "export_kind is '$kind', want FUSE_FILE"
[ -f "$file" ] || tc_fail "export_path '$file' is not a regular file"
[ "$(stat -c %s "$file")" = $((1 << 30)) ] || tc_fail "export file size $(stat -c %s "$file")"

loopdev="$(timeout 30 losetup --direct-io=on --sector-size 4096 --find --show "$file")" ||
  tc_fail "losetup of $file"
grep -q 1 "/sys/block/$(basename "$loopdev")/loop/dio" || tc_fail "$loopdev is not in direct I/O mode"
timeout 120 mkfs.ext4 -q -F "$loopdev" || tc_fail "mkfs.ext4 $loopdev"
mkdir -p "$mnt"
timeout 30 mount "$loopdev" "$mnt" || tc_fail "mount $loopdev"

sums="$TC_RUN_DIR/sums"
: >"$sums"
# writer NAME SECONDS: files of 64-512 KiB, each fsync'd (dd conv=fsync)
# before its checksum is recorded; exits non-zero at the first error.
writer() {
  local prefix=$1 seconds=$2 i=0 end=$((SECONDS + $2)) f
  mkdir -p "$mnt/$prefix"
  while [ $SECONDS -lt $end ]; do
    # At most 1000 files (~290 MB) per writer, so a fast machine cannot fill
    # the filesystem (ENOSPC is not what this test is about); the writer
    # keeps running, idle, until its time is up.
    if [ $i -ge 1000 ]; then sleep 0.1; continue; fi
    f="$prefix/f$i"
    head -c $(((RANDOM % 8 + 1) * 65536)) /dev/urandom >"$TC_RUN_DIR/buf.$prefix"
    dd if="$TC_RUN_DIR/buf.$prefix" of="$mnt/$f" bs=64k conv=fsync status=none || return 1
    echo "$(sha256sum <"$TC_RUN_DIR/buf.$prefix" | cut -d' ' -f1)  $f" >>"$sums"
    i=$((i + 1))
  done
  echo "$prefix: $i files" >&2
}

writer before 2 || tc_fail "writes before the kill failed"
writer during 8 &
wpid=$!
sleep 2
kill -0 "$wpid" 2>/dev/null || tc_fail "writer ended before the kill: nothing was tested"
echo "kill -9 engine e2 ($(engine_addr e2))"
victim="$(engine_addr e2)"
kill9_engine e2
wrc=0; wait "$wpid" || wrc=$?
[ "$wrc" = 0 ] || tc_fail "a write or fsync failed after a replica was killed"
writer after 2 || tc_fail "writes after the kill failed"
n="$(wc -l <"$sums")"

(cd "$mnt" && sha256sum --quiet -c "$sums") || tc_fail "checksums differ before remount"
timeout 60 umount "$mnt" || tc_fail "umount"
timeout 120 fsck.ext4 -n -f "$loopdev" >"$TC_RUN_DIR/fsck.log" 2>&1 || { cat "$TC_RUN_DIR/fsck.log"; tc_fail "fsck found errors"; }
timeout 30 mount "$loopdev" "$mnt" || tc_fail "mount again"
(cd "$mnt" && sha256sum --quiet -c "$sums") || tc_fail "checksums differ after remount"

state="$(replica_state_in_target vol-f e0 "$victim")"
[ "$state" = FAULTED ] || tc_fail "killed replica $victim is '$state' in the target, want FAULTED"
echo "PASS: FUSE file + loop + ext4: $n fsync'd files intact across kill -9 of a replica and a remount"
