#!/usr/bin/env bash
# Bad management requests get clean errors (exit 1, "error: CODE: message"),
# bad NBD clients get refused, and the engine keeps serving throughout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init bad-input
require_engine_or_skip

start_engine e0
start_engine e1

# expect_error CODE ARGS...: `ctl e0 ARGS` must exit 1 with "error: CODE:" on stderr.
expect_error() {
  local code="$1"; shift
  local rc=0
  ctl e0 "$@" >"$TC_RUN_DIR/out" 2>"$TC_RUN_DIR/err" || rc=$?
  [ $rc = 1 ] && grep -q "^error: $code:" "$TC_RUN_DIR/err" ||
    tc_fail "tandemctl $* -> exit $rc, stderr '$(cat "$TC_RUN_DIR/err")', want exit 1 and error: $code"
  echo "ok: $* -> $(head -n 1 "$TC_RUN_DIR/err")"
}

expect_error INVALID_ARGUMENT replica create --volume=bad/name --replica-id=r --size=1M
expect_error INVALID_ARGUMENT replica create --volume=v1 --replica-id=r --size=0
expect_error INVALID_ARGUMENT replica create --volume=v1 --replica-id=r --size=1000
expect_error INVALID_ARGUMENT replica create --volume=../escape --replica-id=r --size=1M
expect_error NOT_FOUND replica get --volume=nope
# Issue 10: 2^62 bytes used to allocate a 2^43-byte dirty map in the handler;
# more than the file system holds (thin provisioning allows more than is free,
# not more than there is); 512-byte blocks fault 4 KiB-aligned backends.
expect_error OUT_OF_RANGE replica create --volume=huge --replica-id=r --size=$((1 << 62))
grep -q "size_bytes" "$TC_RUN_DIR/err" || tc_fail "OUT_OF_RANGE does not name size_bytes"
fs_bytes=$(( $(stat -f -c '%b * %S' "$TC_RUN_DIR") ))
if [ $((fs_bytes / 4096 + 1)) -lt $((31 << 28)) ]; then  # below the ~31.5 TiB metadata limit
  expect_error OUT_OF_RANGE replica create --volume=big --replica-id=r \
    --size=$(((fs_bytes / 4096 + 1) * 4096))
  grep -q "free space" "$TC_RUN_DIR/err" || tc_fail "the file-system bound does not say it is not free space"
fi
expect_error INVALID_ARGUMENT replica create --volume=v1 --replica-id=r --size=1M --block-size=512
grep -q "block_size" "$TC_RUN_DIR/err" || tc_fail "block size error does not name block_size"
kill -0 "$(engine_pid e0)" || tc_fail "engine e0 died"
ctl e0 replica create --volume=after-huge --replica-id=r --size=16M >/dev/null ||
  tc_fail "engine stopped creating replicas after a huge one"
ctl e0 replica delete --volume=after-huge >/dev/null || tc_fail "replica delete"
expect_error NOT_FOUND target get --volume=nope
expect_error INVALID_ARGUMENT target create --volume=v1 --epoch=1 --size=1M --replica=127.0.0.1:99999
expect_error INVALID_ARGUMENT target create --volume=v1 --epoch=0 --size=1M --replica=127.0.0.1:1

# Bad flag values: exit 2 with a message naming the flag, nothing served.
# "9k" was port 9216 (the port went through the size parser).
expect_engine_usage_error() {
  local want="$1"; shift
  local rc=0
  mkdir -p "$TC_RUN_DIR/badflags"
  timeout 20 "$TANDEM_ENGINE" --data-dir="$TC_RUN_DIR/badflags" --grpc-listen=127.0.0.1:0 \
    "$@" >"$TC_RUN_DIR/badflags.out" 2>"$TC_RUN_DIR/badflags.err" || rc=$?
  [ $rc = 2 ] && grep -q -- "$want" "$TC_RUN_DIR/badflags.err" ||
    tc_fail "tandem-engine $* -> exit $rc, stderr '$(cat "$TC_RUN_DIR/badflags.err")', want exit 2 and '$want'"
  echo "ok: tandem-engine $* -> $(head -n 1 "$TC_RUN_DIR/badflags.err")"
}
expect_engine_usage_error "--listen '127.0.0.1:9k': port '9k' is not a decimal number" --listen=127.0.0.1:9k
expect_engine_usage_error "--listen" --listen=127.0.0.1:65536
expect_engine_usage_error "--listen" --listen=127.0.0.1:-1
expect_engine_usage_error "OUT_OF_RANGE" --listen=127.0.0.1:0 --create-replica=big:4194304T
# --cpu went through atoi: "abc" and "1x" pinned to CPU 0 / 1 silently.
expect_engine_usage_error "--cpu 'abc' is not -1" --listen=127.0.0.1:0 --cpu=abc
expect_engine_usage_error "--cpu '1x' is not -1" --listen=127.0.0.1:0 --cpu=1x

# Idempotent create; a conflicting create is ALREADY_EXISTS.
ctl e0 replica create --volume=v1 --replica-id=v1-r0 --size=16M >/dev/null || tc_fail "replica create"
ctl e0 replica create --volume=v1 --replica-id=v1-r0 --size=16M >/dev/null || tc_fail "repeated identical replica create"
expect_error ALREADY_EXISTS replica create --volume=v1 --replica-id=v1-r0 --size=32M
# Destroying a target that does not exist is not an error (idempotent).
ctl e0 target destroy --volume=never-attached >/dev/null || tc_fail "target destroy of a missing target"

# NBD: a target, then garbage and a wrong export name on its socket.
ctl e1 replica create --volume=v1 --replica-id=v1-r1 --size=16M >/dev/null || tc_fail "replica create on e1"
ctl e0 target create --volume=v1 --epoch=1 --size=16M --replica="$(engine_addr e0):local" \
  --replica="$(engine_addr e1)" >/dev/null || tc_fail "target create"
wait_for "[ \"\$(target_state v1 e0)\" = READY ]" 30 "target READY"
sock="$(volume_socket v1 e0)"
python3 - "$sock" <<'PY' || tc_fail "garbage NBD client"
import socket, sys
for junk in [b"\x00" * 200, b"IHAVEOPT" * 40, b"NBDMAGIC" + b"\xff" * 500]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(sys.argv[1])
    try:
        s.recv(4096)           # server greeting
        s.sendall(junk)
        while s.recv(4096):    # the server must answer or close, not hang
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        sys.exit("engine neither answered nor closed a garbage NBD client in 5 s")
    s.close()
PY
if nbdinfo "nbd+unix:///wrong-name?socket=$sock" >"$TC_RUN_DIR/nbdinfo-wrong.out" 2>&1; then
  tc_fail "nbdinfo of a wrong export name succeeded"
fi
kill -0 "$(engine_pid e0)" || tc_fail "engine e0 died"
size="$(nbdinfo --size "nbd+unix:///v1?socket=$sock")" || tc_fail "engine stopped serving NBD"
[ "$size" = $((16 << 20)) ] || tc_fail "export size $size"
ctl e0 replica get --volume=v1 >/dev/null || tc_fail "engine stopped serving the API"
echo "PASS: bad requests get clean errors; the engine keeps serving"
