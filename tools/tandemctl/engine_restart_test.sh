#!/usr/bin/env bash
# tandem-engine + tandemctl as real processes: a replica created through the
# management API survives SIGTERM (exit 0) and a restart; a target over it is
# READY and SIGTERM with it attached still exits 0; command-line errors exit 2,
# API errors exit 1 with "error: CODE: ..."; the management token is enforced;
# --create-replica and SIGINT work; the management API over mutual TLS.
# Every wait is bounded.
#
#   engine_restart_test.sh <tandem-engine> <tandemctl>
set -uo pipefail
engine_bin="$1"
ctl_bin="$2"
tmp="$(mktemp -d /var/tmp/tandemctl-test-XXXXXX)"
pid=""
failures=0

cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# start_engine <log name> [extra flags...]: starts the engine on ephemeral
# ports and sets $pid and $ctl (tandemctl pointed at it).
start_engine() {
  local log="$1"; shift
  rm -f "$tmp/grpc.port" "$tmp/data.port"
  "$engine_bin" --data-dir="$tmp/data" --listen=127.0.0.1:0 --grpc-listen=127.0.0.1:0 \
    --grpc-port-file="$tmp/grpc.port" --port-file="$tmp/data.port" --node-id=test-node --buffer-pool=16M "$@" \
    >"$tmp/$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 200); do
    [ -s "$tmp/grpc.port" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$tmp/grpc.port" ]; then
    cat "$tmp/$log" >&2
    echo "FAIL: engine did not write --grpc-port-file" >&2
    exit 1
  fi
  ctl=("$ctl_bin" "--engine=127.0.0.1:$(cat "$tmp/grpc.port")")
}

# stop_engine [signal]: SIGTERM (or the given signal), wait at most 20 s,
# expect exit status 0.
stop_engine() {
  kill -"${1:-TERM}" "$pid"
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "engine still running 20 s after SIGTERM"
    kill -KILL "$pid"
  fi
  wait "$pid"
  local rc=$?
  [ "$rc" -eq 0 ] || fail "engine exited with $rc after SIG${1:-TERM}, want 0"
  pid=""
}

# expect <want exit> <stdout/stderr pattern> <command...>: runs the command,
# checks its exit status and that its combined output matches the pattern.
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

# --- first run: create through the API --------------------------------------
start_engine engine1.log
expect 0 '^node_id=test-node$' "${ctl[@]}" info
expect 0 '^capacity_total_bytes=[1-9][0-9]*$' "${ctl[@]}" info
expect 0 '^replica_count=0$' "${ctl[@]}" info
expect 0 '^size_bytes=8388608$' "${ctl[@]}" replica create --volume=vol-a --replica-id=r1 --size=8M
expect 0 '^replica_id=r1$' "${ctl[@]}" replica create --volume=vol-a --replica-id=r1 --size=8M
expect 1 '^error: ALREADY_EXISTS: ' "${ctl[@]}" replica create --volume=vol-a --replica-id=r1 --size=16M
expect 1 '^error: INVALID_ARGUMENT: size_bytes' "${ctl[@]}" replica create --volume=vol-b --replica-id=r1 --size=1000
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" replica get --volume=missing
expect 0 '^volume_id=vol-a$' "${ctl[@]}" replica list
expect 0 '^provisioned_bytes=8388608$' "${ctl[@]}" info
# Resize and fence (issue 11): validated; what needs no change is answered.
expect 0 '^size_bytes=8388608$' "${ctl[@]}" replica resize --volume=vol-a --size=8M
expect 1 '^error: OUT_OF_RANGE: ' "${ctl[@]}" replica resize --volume=vol-a --size=4M
expect 1 '^error: INVALID_ARGUMENT: epoch' "${ctl[@]}" replica fence --volume=vol-a --epoch=0
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" replica fence --volume=missing --epoch=3
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target resize --volume=vol-a --size=8M
expect 2 'export' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica=127.0.0.1:9501 --export=ublk
expect 1 '^error: INVALID_ARGUMENT: nbd_tcp_address' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica=127.0.0.1:9501 --export=fuse-file --nbd-tcp=127.0.0.1:0
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target get --volume=vol-a
expect 0 '' "${ctl[@]}" target destroy --volume=vol-a
expect 1 '^error: INVALID_ARGUMENT: epoch' "${ctl[@]}" target create --volume=vol-a --epoch=0 --replica=127.0.0.1:9501
expect 1 '^error: INVALID_ARGUMENT: replicas\[1\]' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica=127.0.0.1:9501 --replica=127.0.0.1:9501:local
# Command-line errors: exit 2, nothing sent.
expect 2 'needs --size' "${ctl[@]}" replica create --volume=vol-c --replica-id=r1
expect 2 'size' "${ctl[@]}" replica create --volume=vol-c --replica-id=r1 --size=12Q
expect 2 'unknown command' "${ctl[@]}" frobnicate
expect 2 'unknown flag' "${ctl[@]}" replica get --volume=vol-a --bogus=1
expect 2 'HOST:PORT' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica=nohostport
expect 0 '^usage: tandemctl' "$ctl_bin" --help
# A second engine whose gRPC port is taken fails to start (exit 1) but still
# closes the replicas it had opened cleanly (checked after the restart below).
timeout 20 "$engine_bin" --data-dir="$tmp/data2" --listen=127.0.0.1:0 \
  --grpc-listen="127.0.0.1:$(cat "$tmp/grpc.port")" --create-replica=vol-y:4M:ry \
  --buffer-pool=16M >"$tmp/engine-busy.log" 2>&1
rc=$?
[ "$rc" -eq 1 ] || fail "engine on a gRPC port in use exited $rc, want 1"
grep -q 'cannot listen for gRPC' "$tmp/engine-busy.log" || fail "engine-busy.log names no gRPC error"
stop_engine

# --- restart: the replica is loaded and served again; token enforced ---------
start_engine engine2.log --mgmt-token=s3cret
expect 1 '^error: UNAUTHENTICATED: ' "${ctl[@]}" replica get --volume=vol-a
expect 1 '^error: UNAUTHENTICATED: ' "${ctl[@]}" --token=wrong replica get --volume=vol-a
ctl=("${ctl[0]}" "${ctl[1]}" --token=s3cret)
expect 0 '^volume_id=vol-a$' "${ctl[@]}" replica get --volume=vol-a
expect 0 '^size_bytes=8388608$' "${ctl[@]}" replica get --volume=vol-a
expect 0 '^clean_shutdown=true$' "${ctl[@]}" replica get --volume=vol-a
# A target over the local replica, exported on a unix socket.
data_port="$(cat "$tmp/data.port")"
expect 0 '^state=READY$' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica="127.0.0.1:$data_port:local"
expect 0 '^replica\.0\.state=HEALTHY$' "${ctl[@]}" target get --volume=vol-a
expect 0 "^nbd_socket=$tmp/data/nbd/vol-a.sock\$" "${ctl[@]}" target list
expect 0 "^export_path=$tmp/data/nbd/vol-a.sock\$" "${ctl[@]}" target list
expect 0 '^export_kind=NBD$' "${ctl[@]}" target list
expect 0 '^loop_index=0$' "${ctl[@]}" target get --volume=vol-a
expect 0 '^loop_index=0$' "${ctl[@]}" target list
expect 0 '^target_count=1$' "${ctl[@]}" info
expect 0 '^highest_epoch=1$' "${ctl[@]}" replica fence --volume=vol-a --epoch=1
expect 0 '^replica\.0\.replica_id=r1$' "${ctl[@]}" target create --volume=vol-a --epoch=1 --replica="127.0.0.1:$data_port:local"
expect 1 '^error: ALREADY_EXISTS: ' "${ctl[@]}" target create --volume=vol-a --epoch=2 --replica="127.0.0.1:$data_port:local"
# SIGTERM with the target attached: it is flushed and destroyed, exit 0.
stop_engine

start_engine engine3.log --mgmt-token=s3cret
ctl+=(--token=s3cret)
expect 0 '^highest_epoch=1$' "${ctl[@]}" replica get --volume=vol-a
expect 0 '^clean_shutdown=true$' "${ctl[@]}" replica get --volume=vol-a
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" target get --volume=vol-a
expect 0 '' "${ctl[@]}" replica delete --volume=vol-a
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" replica get --volume=vol-a
expect 0 '' "${ctl[@]}" replica delete --volume=vol-a
stop_engine

# --- the deletion is durable too; --create-replica still works; SIGINT -------
start_engine engine4.log --create-replica=vol-z:4M:rz
expect 1 '^error: NOT_FOUND: ' "${ctl[@]}" replica get --volume=vol-a
expect 0 '^replica_id=rz$' "${ctl[@]}" replica get --volume=vol-z
expect 0 '^size_bytes=4194304$' "${ctl[@]}" replica list
stop_engine INT

start_engine engine5.log --data-dir="$tmp/data2"
expect 0 '^clean_shutdown=true$' "${ctl[@]}" replica get --volume=vol-y
stop_engine

# --- the management API over mutual TLS (--grpc-tls-*, tandemctl --tls-*) ---
if command -v openssl >/dev/null; then
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  if (cd "$tmp" &&
      openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca &&
      printf 'subjectAltName=IP:127.0.0.1\n' >server.ext &&
      for n in server client; do
        openssl req "${ec[@]}" -keyout $n.key -out $n.csr -subj /CN=$n &&
          openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt \
            -days 2 $([ $n = server ] && echo -extfile server.ext) || exit 1
      done) 2>"$tmp/openssl.log"; then
    start_engine engine6.log --grpc-tls-cert="$tmp/server.crt" --grpc-tls-key="$tmp/server.key" \
      --grpc-tls-client-ca="$tmp/ca.crt"
    tls=(--tls-ca="$tmp/ca.crt" --tls-cert="$tmp/client.crt" --tls-key="$tmp/client.key")
    expect 0 '^node_id=test-node$' "${ctl[@]}" "${tls[@]}" info
    expect 1 '^error: UNAVAILABLE' "${ctl[@]}" --tls-ca="$tmp/ca.crt" --deadline-ms=2000 info
    expect 1 '^error: ' "${ctl[@]}" --deadline-ms=2000 info
    expect 2 'TLS CA file' "${ctl[@]}" --tls-ca="$tmp/missing.crt" info
    stop_engine
  else
    fail "openssl could not make the TLS test certificates: $(cat "$tmp/openssl.log")"
  fi
fi

if [ "$failures" -ne 0 ]; then
  echo "engine logs:" >&2
  cat "$tmp"/engine*.log >&2
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all checks passed"
