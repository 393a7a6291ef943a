#!/usr/bin/env bash
# Secure defaults (issue 10, docs/security.md):
#  - an engine without --auth-token/--mgmt-token logs one WARNING line naming
#    what is unprotected, and refuses (exit 2) a non-loopback --listen or
#    --grpc-listen without the port's token unless --insecure-bind;
#  - management gRPC on a unix socket (unix:/p and unix:///p), mode 0600;
#  - CreateReplica's data_path outside the data dir and CreateTarget's
#    non-loopback nbd_tcp_address are PERMISSION_DENIED;
#  - --auth-token-file/--mgmt-token-file (and tandemctl --token-file) keep
#    tokens out of the command line;
#  - secrets never in logs: two engines with both tokens go through
#    create-replica / create-target / NBD I/O / destroy, and no log of the run
#    (engines, tandemctl, qemu-io) holds either token.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/lib/cluster.sh"
tc_init secure-defaults
require_engine_or_skip

# engine_once NAME FLAGS...: runs tandem-engine in the foreground (20 s at
# most), output in $TC_RUN_DIR/NAME.{out,err}; sets RC.
engine_once() {
  local name="$1"; shift
  mkdir -p "$TC_RUN_DIR/$name"
  RC=0
  timeout 20 "$TANDEM_ENGINE" --data-dir="$TC_RUN_DIR/$name" "$@" \
    >"$TC_RUN_DIR/$name.out" 2>"$TC_RUN_DIR/$name.err" || RC=$?
}
expect_bind_refused() {
  local want="$1"; shift
  engine_once refused "$@"
  [ "$RC" = 2 ] && grep -q -- "$want" "$TC_RUN_DIR/refused.err" &&
    grep -q -- "--insecure-bind" "$TC_RUN_DIR/refused.err" ||
    tc_fail "tandem-engine $* -> exit $RC, stderr '$(cat "$TC_RUN_DIR/refused.err")', want exit 2 naming $want and --insecure-bind"
  [ ! -e "$TC_RUN_DIR/refused/nbd" ] || tc_fail "a refused engine started serving"
  echo "ok: tandem-engine $* -> exit 2: $(head -n 1 "$TC_RUN_DIR/refused.err")"
}

# --- 1. No tokens: loopback only, unless --insecure-bind ---------------------
expect_bind_refused "--auth-token" --listen=0.0.0.0:0 --grpc-listen=127.0.0.1:0
expect_bind_refused "--mgmt-token" --listen=127.0.0.1:0 --grpc-listen=0.0.0.0:0
expect_bind_refused "--mgmt-token" --listen=127.0.0.1:0 --grpc-listen=0.0.0.0:0 --auth-token=x
expect_bind_refused "--auth-token" --listen=10.255.255.1:0 --grpc-listen=127.0.0.1:0 --mgmt-token=y

# Loopback: starts, and says once what is unprotected.
start_engine e0
wait_for "grep -q 'management API on' '$TC_RUN_DIR/e0.log'" 10 "e0 start log"
[ "$(grep -c 'WARNING: unprotected' "$TC_RUN_DIR/e0.log")" = 1 ] ||
  tc_fail "e0 without tokens: want one 'WARNING: unprotected' line"
grep 'WARNING: unprotected' "$TC_RUN_DIR/e0.log" | grep -q -- "data port 127.0.0.1:$(engine_data_port e0).*--auth-token" ||
  tc_fail "the warning does not name the data port and --auth-token"
grep 'WARNING: unprotected' "$TC_RUN_DIR/e0.log" | grep -q -- "management API 127.0.0.1:$(engine_grpc_port e0).*--mgmt-token" ||
  tc_fail "the warning does not name the management API and --mgmt-token"
echo "ok: $(grep 'WARNING: unprotected' "$TC_RUN_DIR/e0.log")"

# --insecure-bind: the operator's explicit choice.
start_engine open --listen=0.0.0.0:0 --grpc-listen=0.0.0.0:0 --insecure-bind
grep -q 'WARNING: unprotected' "$TC_RUN_DIR/open.log" || tc_fail "--insecure-bind engine without the warning"
stop_engine open
echo "ok: --insecure-bind binds 0.0.0.0 (with the warning)"

# --- 2. data_path and nbd_tcp_address ------------------------------------------
expect_denied() {
  local want="$1"; shift
  local rc=0
  ctl e0 "$@" >"$TC_RUN_DIR/out" 2>"$TC_RUN_DIR/err" || rc=$?
  [ $rc = 1 ] && grep -q "^error: PERMISSION_DENIED: $want" "$TC_RUN_DIR/err" ||
    tc_fail "tandemctl $* -> exit $rc, stderr '$(cat "$TC_RUN_DIR/err")', want PERMISSION_DENIED: $want"
  echo "ok: $* -> $(head -n 1 "$TC_RUN_DIR/err")"
}
truncate -s 16M "$TC_RUN_DIR/outside.img"
ln -s "$TC_RUN_DIR/outside.img" "$TC_RUN_DIR/e0/data/link.img"
expect_denied data_path replica create --volume=p1 --replica-id=r --size=16M --data-path="$TC_RUN_DIR/outside.img"
expect_denied data_path replica create --volume=p1 --replica-id=r --size=16M --data-path="$TC_RUN_DIR/e0/data/link.img"
expect_denied data_path replica create --volume=p1 --replica-id=r --size=16M --data-path="$TC_RUN_DIR/e0/data/../../outside.img"
expect_denied data_path replica create --volume=p1 --replica-id=r --size=16M --data-path=/etc/passwd
truncate -s 16M "$TC_RUN_DIR/e0/data/inside.img"
ctl e0 replica create --volume=p1 --replica-id=r --size=16M --data-path="$TC_RUN_DIR/e0/data/inside.img" \
  >/dev/null || tc_fail "a data_path under the data dir was refused"
expect_denied nbd_tcp_address target create --volume=p1 --epoch=1 --size=16M \
  --replica="$(engine_addr e0):local" --nbd-tcp=0.0.0.0:0
ctl e0 target get --volume=p1 >/dev/null 2>&1 && tc_fail "a refused target exists"
# An engine that allows it: --allowed-device and --allow-remote-nbd.
start_engine e3 --allowed-device="$TC_RUN_DIR/e0/data/link.img" --allow-remote-nbd
ctl e3 replica create --volume=p3 --replica-id=r --size=16M --data-path="$TC_RUN_DIR/outside.img" \
  >/dev/null || tc_fail "--allowed-device (a link to the file) did not allow the file"
ctl e3 target create --volume=p3 --epoch=1 --size=16M --replica="$(engine_addr e3):local" \
  --nbd-tcp=0.0.0.0:0 >/dev/null || tc_fail "--allow-remote-nbd did not allow nbd_tcp_address 0.0.0.0"
ctl e3 target destroy --volume=p3 >/dev/null || tc_fail "target destroy on e3"
stop_engine e3
echo "ok: --allowed-device and --allow-remote-nbd"

# --- 3. Management gRPC on a unix socket, mode 0600 ----------------------------
for form in "unix:" "unix://"; do
  sock="$TC_RUN_DIR/mgmt.sock"
  rm -f "$sock"
  # The later --grpc-listen wins over start_engine's TCP one.
  old_umask="$(umask)"
  umask 0  # would make a 0777 socket
  start_engine u0 --grpc-listen="$form$sock"
  umask "$old_umask"
  [ -S "$sock" ] || tc_fail "no socket at $sock ($form)"
  mode="$(stat -c %a "$sock")"
  [ "$mode" = 600 ] || tc_fail "gRPC unix socket $sock has mode $mode, want 600 ($form, umask 0)"
  "$TANDEMCTL" --engine="unix:$sock" replica create --volume=u1 --replica-id=r --size=16M \
    >/dev/null || tc_fail "tandemctl over the unix socket ($form)"
  "$TANDEMCTL" --engine="unix:$sock" replica delete --volume=u1 >/dev/null || tc_fail "replica delete over unix"
  grep -q "management API unix:$sock\|management API ${form}$sock" "$TC_RUN_DIR/u0.log" ||
    tc_fail "the warning does not name the unix socket"
  kill -TERM "$(engine_pid u0)"; _wait_exit "$(engine_pid u0)" 20 || tc_fail "u0 did not stop"
  rm -f "$TC_RUN_DIR/u0/port" "$TC_RUN_DIR/u0/grpc_port"
  echo "ok: --grpc-listen=$form$sock is mode $mode and serves tandemctl"
done

# --- 4. Secrets never in logs -----------------------------------------------------
data_token="dtok-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
mgmt_token="mtok-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# s1 reads its tokens from files (0600), so they are not in its command line.
(umask 077; echo "$data_token" >"$TC_RUN_DIR/data.token"; echo "$mgmt_token" >"$TC_RUN_DIR/mgmt.token")
: >"$TC_RUN_DIR/empty.token"
expect_token_flag_refused() {
  local want="$1"; shift
  engine_once tokflags --listen=127.0.0.1:0 --grpc-listen=127.0.0.1:0 "$@"
  [ "$RC" = 2 ] && grep -q -- "$want" "$TC_RUN_DIR/tokflags.err" ||
    tc_fail "tandem-engine $* -> exit $RC, stderr '$(cat "$TC_RUN_DIR/tokflags.err")', want exit 2 and '$want'"
  echo "ok: tandem-engine $* -> exit 2: $(head -n 1 "$TC_RUN_DIR/tokflags.err")"
}
expect_token_flag_refused "empty secret" --auth-token-file="$TC_RUN_DIR/empty.token"
expect_token_flag_refused "exclusive" --mgmt-token=x --mgmt-token-file="$TC_RUN_DIR/mgmt.token"
expect_token_flag_refused "mgmt-token-file" --mgmt-token-file="$TC_RUN_DIR/missing.token"
start_engine s0 --auth-token="$data_token" --mgmt-token="$mgmt_token"
start_engine s1 --auth-token-file="$TC_RUN_DIR/data.token" --mgmt-token-file="$TC_RUN_DIR/mgmt.token" \
  --listen=0.0.0.0:0  # a token lets the data port leave loopback
tr '\0' ' ' </proc/"$(engine_pid s1)"/cmdline | grep -qF -e "${data_token#dtok-}" -e "${mgmt_token#mtok-}" &&
  tc_fail "s1's command line holds a token"
"$TANDEMCTL" --engine="127.0.0.1:$(engine_grpc_port s1)" --token-file="$TC_RUN_DIR/mgmt.token" info \
  >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "tandemctl --token-file against --mgmt-token-file"
wait_for "grep -q 'management API on' '$TC_RUN_DIR/s1.log'" 10 "s1 start log"
grep -q 'WARNING: unprotected' "$TC_RUN_DIR/s0.log" && tc_fail "an engine with both tokens warns"
sctl() { local e="$1"; shift; ctl "$e" --token="$mgmt_token" "$@" >>"$TC_RUN_DIR/ctl.log" 2>&1; }
# Without the management token: UNAUTHENTICATED, and the attempt is logged without secrets.
ctl s0 --token="wrong-$mgmt_token" replica list >>"$TC_RUN_DIR/ctl.log" 2>&1 &&
  tc_fail "a wrong management token was accepted"
sctl s0 replica create --volume=sv --replica-id=sv-r0 --size=16M || tc_fail "replica create on s0"
sctl s1 replica create --volume=sv --replica-id=sv-r1 --size=16M || tc_fail "replica create on s1"
sctl s0 target create --volume=sv --epoch=1 --size=16M --token="$data_token" \
  --replica="$(engine_addr s0):local" --replica="$(engine_addr s1)" --nbd-tcp=127.0.0.1:0 ||
  tc_fail "target create on s0"
wait_for "ctl s0 --token=$mgmt_token target get --volume=sv | grep -qx state=READY" 30 "sv READY"
sock="$(ctl s0 --token="$mgmt_token" target get --volume=sv | sed -n 's/^nbd_socket=//p')"
qemu-io -f raw -c "write -P 0x5a 0 1M" -c "read -P 0x5a 0 1M" -c flush \
  "nbd+unix:///sv?socket=$sock" >>"$TC_RUN_DIR/qemu-io.log" 2>&1 || tc_fail "NBD I/O on sv"
# A target with a wrong data token cannot reach the replicas.
sctl s1 replica create --volume=sw --replica-id=sw-r1 --size=16M || tc_fail "replica create sw"
sctl s0 target create --volume=sw --epoch=1 --size=16M --token="bad-$data_token" \
  --replica="$(engine_addr s1)" || true
sleep 1
sctl s0 target get --volume=sw || true
sctl s0 target destroy --volume=sw || tc_fail "target destroy sw"
sctl s0 target destroy --volume=sv || tc_fail "target destroy sv"
sctl s0 replica delete --volume=sv || tc_fail "replica delete on s0"
stop_engine s0
stop_engine s1
grep -q 'WARNING: unprotected' "$TC_RUN_DIR/s1.log" && tc_fail "an engine with both token files warns"
for f in "$TC_RUN_DIR"/*.log "$TC_RUN_DIR"/*.err "$TC_RUN_DIR"/*.out; do
  [ -f "$f" ] || continue
  if grep -qF -- "${data_token#dtok-}" "$f" || grep -qF -- "${mgmt_token#mtok-}" "$f"; then
    tc_fail "$(basename "$f") holds a token: $(grep -nF -e "${data_token#dtok-}" -e "${mgmt_token#mtok-}" "$f" | head -n 3)"
  fi
done
grep -q "CreateTarget sv epoch 1: OK" "$TC_RUN_DIR/s0.log" || tc_fail "s0's log does not show the cycle"
echo "ok: no token in $(ls "$TC_RUN_DIR"/*.log | wc -l) logs of a create/target/I/O/destroy cycle"
echo "PASS: secure defaults"
