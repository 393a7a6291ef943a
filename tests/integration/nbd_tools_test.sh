#!/usr/bin/env bash
# Three tandem-engine processes on 127.0.0.1 and a 3-replica volume target on
# engine 0, exported over NBD; unmodified NBD clients work against it:
#   - nbdinfo reports the volume's size,
#   - fio's nbd engine: random writes with verify=crc32c, then the verify pass,
#   - qemu-img convert into and out of the export round-trips a file byte for
#     byte, and so does nbdcopy out of it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init nbd-tools
require_engine_or_skip

for e in e0 e1 e2; do start_engine "$e"; done
create_volume vol-a 256M e0 e1 e2
uri="$(volume_uri vol-a e0)"
echo "export: $uri"

size="$(nbdinfo --size "$uri")" || tc_fail "nbdinfo --size $uri"
[ "$size" = $((256 << 20)) ] || tc_fail "nbdinfo size $size, want $((256 << 20))"
nbdinfo "$uri" >"$TC_RUN_DIR/nbdinfo.out" 2>&1 || tc_fail "nbdinfo $uri"

fio_nbd randwrite-verify "$uri" --rw=randwrite --bs=4k --size=64M --iodepth=16 \
  --verify=crc32c --do_verify=1 --verify_fatal=1 || tc_fail "fio randwrite+verify"
fio_check "$TC_RUN_DIR/randwrite-verify.json"
python3 - "$TC_RUN_DIR/randwrite-verify.json" <<'PY' || tc_fail "fio did not write and verify all 64M"
import json, sys
t = open(sys.argv[1]).read(); j = json.loads(t[t.find("{"):])["jobs"][0]
assert j["write"]["io_bytes"] == 64 << 20, j["write"]["io_bytes"]
assert j["read"]["io_bytes"] == 64 << 20, j["read"]["io_bytes"]
PY

# A second volume, so the round trip covers every byte of the export.
create_volume vol-b 32M e0 e1 e2
uri_b="$(volume_uri vol-b e0)"
head -c 32M /dev/urandom >"$TC_RUN_DIR/in.raw"
qemu-img convert -n -f raw -O raw "$TC_RUN_DIR/in.raw" "$uri_b" || tc_fail "qemu-img convert into $uri_b"
qemu-img convert -f raw -O raw "$uri_b" "$TC_RUN_DIR/out.raw" || tc_fail "qemu-img convert out of $uri_b"
cmp "$TC_RUN_DIR/in.raw" "$TC_RUN_DIR/out.raw" || tc_fail "qemu-img round trip differs"
nbdcopy "$uri_b" "$TC_RUN_DIR/out2.raw" || tc_fail "nbdcopy out of $uri_b"
cmp "$TC_RUN_DIR/in.raw" "$TC_RUN_DIR/out2.raw" || tc_fail "nbdcopy copy differs"
echo "PASS: nbdinfo, fio nbd verify, qemu-img and nbdcopy round trips"
