#!/usr/bin/env bash
# tandemctl's rebuild commands against real tandem-engine processes: a target
# on engine 1 over its local replica (holding 8 MiB of data) gains engine 2's
# fresh replica with `target add-replica`; the rebuild is rate limited
# (--rebuild-rate) so `target watch --until-done` sees it run, on a pipe (one
# line per update) and on a pseudo-terminal (carriage-return redraws); it ends
# with exit 0 and `target get` shows rebuild.state=DONE, rebuilds_completed=1.
# Then: set-rate validation, rebuild/remove-replica errors and retries, and a
# watch of a replica that never comes back ends at --timeout-s with exit 1.
# Every wait is bounded.
#
#   rebuild_watch_test.sh <tandem-engine> <tandemctl>
set -uo pipefail
engine_bin="$1"
ctl_bin="$2"
tmp="$(mktemp -d /var/tmp/tandemctl-rebuild-test-XXXXXX)"
pids=()
failures=0

cleanup() {
  for p in "${pids[@]}"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; fi
  done
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# start_engine <n> [extra flags...]: engine n on ephemeral ports with a
# replica of vol-w; sets pids[n], data_port[n], grpc_port[n]. The buffer pool
# must hold a 1 MiB buffer in each of its size classes (the rebuild copies
# 1 MiB windows): 8M does not.
declare -a data_port grpc_port
start_engine() {
  local n="$1"; shift
  local dir="$tmp/e$n"
  mkdir -p "$dir"
  "$engine_bin" --data-dir="$dir/data" --listen=127.0.0.1:0 --grpc-listen=127.0.0.1:0 \
    --grpc-port-file="$dir/grpc.port" --port-file="$dir/data.port" --node-id="node-$n" \
    --buffer-pool=32M --create-replica=vol-w:32M:r$n "$@" >"$tmp/engine$n.log" 2>&1 &
  pids[$n]=$!
  for _ in $(seq 1 200); do
    [ -s "$dir/grpc.port" ] && break
    kill -0 "${pids[$n]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$dir/grpc.port" ]; then
    cat "$tmp/engine$n.log" >&2
    echo "FAIL: engine $n did not write --grpc-port-file" >&2
    exit 1
  fi
  data_port[$n]="$(cat "$dir/data.port")"
  grpc_port[$n]="$(cat "$dir/grpc.port")"
}

# stop_engine <n>: SIGTERM, at most 20 s, exit status 0.
stop_engine() {
  local p="${pids[$1]}"
  kill -TERM "$p"
  for _ in $(seq 1 200); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$p" 2>/dev/null; then
    fail "engine $1 still running 20 s after SIGTERM"
    kill -KILL "$p"
  fi
  wait "$p"
  local rc=$?
  [ "$rc" -eq 0 ] || fail "engine $1 exited with $rc after SIGTERM, want 0"
  pids[$1]=""
}

# expect <want exit> <output pattern> <command...>
expect() {
  local want="$1" pattern="$2"; shift 2
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "'$*' exited $rc, want $want; output: $out"
  elif ! grep -qE -- "$pattern" <<<"$out"; then
    fail "'$*' output does not match /$pattern/: $out"
  fi
}

# Engine 1 hosts the target; its default rebuild rate is 4 MiB/s.
start_engine 1 --rebuild-rate=4M --reconnect-interval-ms=200
start_engine 2
start_engine 3
ctl=("$ctl_bin" "--engine=127.0.0.1:${grpc_port[1]}" --deadline-ms=10000)
r1="127.0.0.1:${data_port[1]}"
r2="127.0.0.1:${data_port[2]}"
r3="127.0.0.1:${data_port[3]}"

# 8 MiB of data on engine 1's replica, before any target uses it.
dd if=/dev/urandom of="$tmp/e1/data/vol-w/data" bs=1M count=8 conv=notrunc,fsync status=none ||
  fail "dd into the replica"

expect 0 '^state=READY$' "${ctl[@]}" target create --volume=vol-w --epoch=1 --replica="$r1:local"
expect 0 '^rebuild\.state=IDLE$' "${ctl[@]}" target get --volume=vol-w
expect 0 '^rebuild\.rate_limit_bytes_per_sec=4194304$' "${ctl[@]}" target get --volume=vol-w
# Nothing to rebuild: --until-done is done at once.
expect 0 'READY  no rebuild running' timeout 20 "${ctl[@]}" target watch --volume=vol-w --until-done --timeout-s=10

# --- add a fresh replica; watch it on a pipe ---------------------------------
expect 0 "^replica\.1\.address=$r2\$" "${ctl[@]}" target add-replica --volume=vol-w --replica="$r2"
expect 0 "^replica\.1\.address=$r2\$" "${ctl[@]}" target add-replica --volume=vol-w --replica="$r2"  # retried
timeout 60 "${ctl[@]}" target watch --volume=vol-w --interval-ms=100 --until-done --timeout-s=45 \
  >"$tmp/watch-pipe.out" 2>&1
rc=$?
[ "$rc" -eq 0 ] || fail "watch --until-done (pipe) exited $rc, want 0: $(cat "$tmp/watch-pipe.out")"
grep -qE '^\[#*\.*\] +[0-9]+%  .* FULL from 127\.0\.0\.1:[0-9]+ -> '"$r2"'$' "$tmp/watch-pipe.out" ||
  fail "no running progress line: $(cat "$tmp/watch-pipe.out")"
grep -qE '^\[#{16}\] 100%  32\.0 MiB / 32\.0 MiB  .*  DONE$' "$tmp/watch-pipe.out" ||
  fail "no final DONE line: $(cat "$tmp/watch-pipe.out")"
if grep -q $'\r' "$tmp/watch-pipe.out"; then fail "carriage returns on a pipe"; fi
[ "$(grep -c '%' "$tmp/watch-pipe.out")" -ge 2 ] || fail "want several progress lines on a pipe"
expect 0 '^rebuild\.state=DONE$' "${ctl[@]}" target get --volume=vol-w
expect 0 '^rebuild\.mode=FULL$' "${ctl[@]}" target get --volume=vol-w
expect 0 '^rebuilds_completed=1$' "${ctl[@]}" target get --volume=vol-w
expect 0 "^rebuild\.replica=$r2\$" "${ctl[@]}" target get --volume=vol-w
expect 0 '^replica\.1\.state=HEALTHY$' "${ctl[@]}" target get --volume=vol-w
cmp -n $((8 << 20)) "$tmp/e1/data/vol-w/data" "$tmp/e2/data/vol-w/data" ||
  fail "the rebuilt replica's first 8 MiB differ from the source's"

# --- the same on a terminal: one line redrawn with carriage returns ----------
expect 0 "^rebuild\.rate_limit_bytes_per_sec=4194304\$" "${ctl[@]}" target set-rate --volume=vol-w --rate=4M
expect 0 "^replica\.2\.address=$r3\$" "${ctl[@]}" target add-replica --volume=vol-w --replica="$r3"
TERM=dumb timeout 60 script -qec "${ctl[*]} target watch --volume=vol-w --interval-ms=100 --until-done --timeout-s=45" \
  "$tmp/watch-tty.out" >/dev/null 2>&1
rc=$?
[ "$rc" -eq 0 ] || fail "watch --until-done (tty) exited $rc, want 0: $(cat -v "$tmp/watch-tty.out")"
grep -q $'\r\\[' "$tmp/watch-tty.out" || fail "no carriage-return redraw on a tty: $(cat -v "$tmp/watch-tty.out")"
grep -qE "100%  32\.0 MiB / 32\.0 MiB  .* -> $r3  DONE" "$tmp/watch-tty.out" ||
  fail "no final DONE bar on a tty: $(cat -v "$tmp/watch-tty.out")"
expect 0 '^rebuilds_completed=2$' "${ctl[@]}" target get --volume=vol-w

# --- errors and retries -------------------------------------------------------
expect 1 '^error: INVALID_ARGUMENT: bytes_per_sec' "${ctl[@]}" target set-rate --volume=vol-w --rate=100
expect 2 'rate' "${ctl[@]}" target set-rate --volume=vol-w --rate=fast
expect 0 '^rebuild\.rate_limit_bytes_per_sec=0$' "${ctl[@]}" target set-rate --volume=vol-w --rate=0
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target set-rate --volume=nope --rate=1G
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target rebuild --volume=vol-w --replica=127.0.0.1:1
expect 1 '^error: INVALID_ARGUMENT: address' "${ctl[@]}" target rebuild --volume=vol-w --replica=localhost:1
expect 0 '^replica\.2\.state=HEALTHY$' "${ctl[@]}" target rebuild --volume=vol-w --replica="$r3"  # no-op
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target remove-replica --volume=nope --replica="$r3"
expect 0 '^state=READY$' "${ctl[@]}" target remove-replica --volume=vol-w --replica="$r3"
expect 0 '^state=READY$' "${ctl[@]}" target remove-replica --volume=vol-w --replica="$r3"  # retried
expect 2 'needs --replica' "${ctl[@]}" target add-replica --volume=vol-w
expect 2 'HOST:PORT' "${ctl[@]}" target add-replica --volume=vol-w --replica=nohostport
expect 2 'interval-ms' "${ctl[@]}" target watch --volume=vol-w --interval-ms=0
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target watch --volume=nope --until-done --timeout-s=5
# The live list (any order) is still an idempotent CreateTarget.
expect 0 '^state=READY$' "${ctl[@]}" target create --volume=vol-w --epoch=1 --replica="$r2" --replica="$r1:local"

# --- a replica that never comes back: the watch ends at its timeout ------------
stop_engine 3
expect 0 "^replica\.2\.address=$r3\$" "${ctl[@]}" target add-replica --volume=vol-w --replica="$r3"
start=$(date +%s)
expect 1 'not done after 2 s' timeout 30 "${ctl[@]}" target watch --volume=vol-w --until-done --timeout-s=2
[ $(($(date +%s) - start)) -le 10 ] || fail "watch --timeout-s=2 took more than 10 s"
expect 0 "=FAULTED" "${ctl[@]}" target watch --volume=vol-w --timeout-s=1

expect 0 '' "${ctl[@]}" target destroy --volume=vol-w
stop_engine 2
stop_engine 1

if [ "$failures" -ne 0 ]; then
  echo "engine logs:" >&2
  cat "$tmp"/engine*.log >&2
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
