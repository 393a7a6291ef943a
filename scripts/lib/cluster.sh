# shellcheck shell=bash
# cluster.sh: shell helpers that run a small Tandem cluster on 127.0.0.1 for
# the integration tests, the NBD benchmark and the main job. Source it, then:
#
#   tc_init NAME                 run dir /var/tmp/tandem-NAME.XXXXXX ($TC_RUN_DIR) and
#                                a trap that kills every process started here and
#                                removes the run dir on exit, Ctrl-C and SIGTERM
#   start_engine E [FLAGS...]    tandem-engine E (data protocol and gRPC on port 0)
#   stop_engine E | kill9_engine E | sigstop_engine E | sigcont_engine E
#   restart_engine E [--new-ports]
#   engine_addr E / engine_grpc_port E / engine_pid E
#   ctl E ARGS...                tandemctl against engine E
#   create_volume V SIZE E0 [E1 ...]  one replica on each engine, target (epoch 1) on E0,
#                                waits for READY; replica i's id is V-rI
#   volume_uri V E               nbd+unix URI of V's export on engine E
#   wait_for 'CMD' SECONDS [WHAT]     polls CMD every 0.1 s; fails with context on timeout
#   tc_spawn NAME CMD...         any background process, logged to $TC_RUN_DIR/NAME.log
#   tc_fail MSG                  prints MSG and the tail of every log, exits 1
#
# Binaries: $TANDEM_ENGINE, $TANDEMCTL (defaults: $TANDEM_BUILD/replica-engine/service/tandem-engine
# and $TANDEM_BUILD/tools/tandemctl/tandemctl). Every wait is bounded.
# TANDEM_KEEP_RUN_DIR=1 keeps the run dir for debugging.

TC_RUN_DIR=""
TC_PIDS=()   # every pid started through tc_spawn, in start order
declare -A TC_PID_OF=()

tc_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

tc_init() {
  local name="${1:-cluster}"
  : "${TANDEM_BUILD:=${TANDEM_SOURCE_DIR:-.}/build/dev}"
  : "${TANDEM_ENGINE:=$TANDEM_BUILD/replica-engine/service/tandem-engine}"
  : "${TANDEMCTL:=$TANDEM_BUILD/tools/tandemctl/tandemctl}"
  TC_RUN_DIR="$(mktemp -d "/var/tmp/tandem-$name.XXXXXX")"
  trap tc_cleanup EXIT
  trap 'tc_log "interrupted"; exit 130' INT
  trap 'tc_log "terminated"; exit 143' TERM
}

# tc_unmount_all [--fuse]: mounts under the run dir (deepest first) and loop
# devices over its files; with --fuse also the FUSE exports (lazily: their
# server may be dead). Called before the engines are killed (an engine
# exporting a FUSE file is still there to answer the loop's last writes) and,
# with --fuse, after, so a failed run leaks nothing.
tc_unmount_all() {
  [ -n "$TC_RUN_DIR" ] && [ -d "$TC_RUN_DIR" ] || return 0
  local m line
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$TC_RUN_DIR/" 'index($2, d) == 1 && $3 !~ /^fuse/ { print $2 }' /proc/mounts | sort -r)
  while read -r line; do
    losetup -d "${line%%:*}" 2>/dev/null || true
  done < <(losetup -a 2>/dev/null | grep -F "($TC_RUN_DIR/" || true)
  [ "${1:-}" = --fuse ] || return 0
  while read -r m; do
    fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$TC_RUN_DIR/" 'index($2, d) == 1 && $3 ~ /^fuse/ { print $2 }' /proc/mounts | sort -r)
}

# Unmounts and detaches (tc_unmount_all), then kills (SIGCONT first, so a
# stopped process can die) everything tc_spawn started, newest first:
# SIGTERM, up to 5 s grace, then SIGKILL.
tc_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid i
  # A SIGSTOPped engine would hang an unmount that writes through it.
  for pid in "${TC_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
  tc_unmount_all
  for ((i = ${#TC_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${TC_PIDS[$i]}"
    kill -0 "$pid" 2>/dev/null || continue
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 5))
  for pid in "${TC_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  tc_unmount_all --fuse  # and the FUSE mounts of engines that died without unmounting
  if [ -n "$TC_RUN_DIR" ] && [ -d "$TC_RUN_DIR" ]; then
    if [ "${TANDEM_KEEP_RUN_DIR:-0}" = 1 ]; then
      tc_log "kept run dir $TC_RUN_DIR"
    else
      rm -rf "$TC_RUN_DIR"
    fi
  fi
  exit "$rc"
}

tc_dump_logs() {
  local f
  for f in "$TC_RUN_DIR"/*.log; do
    [ -f "$f" ] || continue
    echo "----- $(basename "$f") (last 40 lines) -----" >&2
    tail -n 40 "$f" >&2
  done
}

tc_fail() {
  echo "FAIL: $*" >&2
  tc_dump_logs
  exit 1
}

# tc_spawn NAME CMD...: starts CMD in the background, output to $TC_RUN_DIR/NAME.log.
tc_spawn() {
  local name="$1"; shift
  "$@" >>"$TC_RUN_DIR/$name.log" 2>&1 &
  local pid=$!
  TC_PIDS+=("$pid")
  TC_PID_OF[$name]=$pid
}

# wait_for 'CMD' SECONDS [WHAT]: returns once CMD (eval'd) succeeds; tc_fail on timeout.
wait_for() {
  local cmd="$1" timeout="$2" what="${3:-$1}"
  local deadline=$(($(date +%s%N) / 1000000 + timeout * 1000))
  until eval "$cmd" >/dev/null 2>&1; do
    if [ $(($(date +%s%N) / 1000000)) -ge $deadline ]; then
      tc_fail "timed out after ${timeout}s waiting for: $what"
    fi
    sleep 0.1
  done
}

# True when the build has the binaries and flags the engine tests need.
engine_tests_possible() {
  [ -x "$TANDEM_ENGINE" ] && [ -x "$TANDEMCTL" ] &&
    "$TANDEM_ENGINE" --help 2>&1 | grep -q -- '--grpc-listen'
}

require_engine_or_skip() {
  if ! engine_tests_possible; then
    echo "SKIP: needs $TANDEM_ENGINE with --grpc-listen and $TANDEMCTL" >&2
    exit 77
  fi
}

_engine_dir() { echo "$TC_RUN_DIR/$1"; }

# start_engine NAME [EXTRA FLAGS...]: starts tandem-engine NAME and waits (20 s)
# for its data and gRPC ports. Reuses the ports of an earlier start of NAME.
start_engine() {
  local name="$1"; shift
  local dir; dir="$(_engine_dir "$name")"
  mkdir -p "$dir/data" "$dir/nbd"
  local data_port=0 grpc_port=0
  [ -f "$dir/port" ] && data_port="$(cat "$dir/port")"
  [ -f "$dir/grpc_port" ] && grpc_port="$(cat "$dir/grpc_port")"
  rm -f "$dir/port" "$dir/grpc_port"
  echo "$*" >"$dir/extra_flags"
  # TANDEM_ENGINE_EXTRA_FLAGS: flags every engine of the test gets (e.g.
  # --target-loop=server, to run it with the in-process local replica).
  # shellcheck disable=SC2086
  tc_spawn "$name" "$TANDEM_ENGINE" --data-dir="$dir/data" --node-id="$name" \
    --listen="127.0.0.1:$data_port" --port-file="$dir/port" \
    --grpc-listen="127.0.0.1:$grpc_port" --grpc-port-file="$dir/grpc_port" \
    --nbd-dir="$dir/nbd" ${TANDEM_ENGINE_EXTRA_FLAGS:-} "$@"
  local pid="${TC_PID_OF[$name]}"
  disown "$pid"  # engines are watched by pid; no "Killed" job notices from bash
  echo "$pid" >"$dir/pid"
  local deadline=$((SECONDS + 20))
  until [ -s "$dir/port" ] && [ -s "$dir/grpc_port" ]; do
    kill -0 "$pid" 2>/dev/null || tc_fail "engine $name exited during start"
    [ $SECONDS -lt $deadline ] || tc_fail "engine $name did not write its port files in 20 s"
    sleep 0.1
  done
}

engine_pid() { cat "$(_engine_dir "$1")/pid"; }
engine_data_port() { cat "$(_engine_dir "$1")/port"; }
engine_grpc_port() { cat "$(_engine_dir "$1")/grpc_port"; }
engine_addr() { echo "127.0.0.1:$(engine_data_port "$1")"; }
engine_nbd_dir() { echo "$(_engine_dir "$1")/nbd"; }

# _wait_exit PID SECONDS: true once PID has exited (bash keeps its status for wait).
_wait_exit() {
  local pid="$1" deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# wait_rc PID SECONDS: waits (bounded) for a child started by tc_spawn and
# returns its exit status; tc_fail on timeout.
wait_rc() {
  _wait_exit "$1" "$2" || tc_fail "pid $1 ($(tr '\0' ' ' </proc/"$1"/cmdline 2>/dev/null)) still running after $2 s"
  local rc=0
  wait "$1" || rc=$?
  return $rc
}

stop_engine() {
  local pid; pid="$(engine_pid "$1")"
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || return 0
  _wait_exit "$pid" 20 || { kill -KILL "$pid" 2>/dev/null; tc_fail "engine $1 ignored SIGTERM for 20 s"; }
}
kill9_engine() {
  local pid; pid="$(engine_pid "$1")"
  kill -KILL "$pid" 2>/dev/null || true
  _wait_exit "$pid" 10 || tc_fail "engine $1 survived SIGKILL"
}
sigstop_engine() { kill -STOP "$(engine_pid "$1")"; }
sigcont_engine() { kill -CONT "$(engine_pid "$1")" 2>/dev/null || true; }
# restart_engine NAME [--new-ports]: starts NAME again on its data dir, with its
# first flags, on its old ports (or on new ones: then no target reconnects to it).
restart_engine() {
  local extra; extra="$(cat "$(_engine_dir "$1")/extra_flags")"
  [ "${2:-}" = --new-ports ] && rm -f "$(_engine_dir "$1")/port" "$(_engine_dir "$1")/grpc_port"
  # shellcheck disable=SC2086
  start_engine "$1" $extra
}

ctl() {
  local name="$1"; shift
  "$TANDEMCTL" --engine="127.0.0.1:$(engine_grpc_port "$name")" "$@"
}

# ctl_field E KEY ARGS...: the value of KEY= in the output of `ctl E ARGS...`.
ctl_field() {
  local name="$1" key="$2"; shift 2
  ctl "$name" "$@" | sed -n "s/^$key=//p" | head -n 1
}

target_state() { ctl_field "$2" state target get --volume="$1"; }

# create_volume VOL SIZE E0 [E1 ...] [-- EXTRA TARGET FLAGS]: a replica of SIZE on
# each engine, a target (epoch 1) on E0 over all of them; waits 30 s for READY.
create_volume() {
  local vol="$1" size="$2"; shift 2
  local engines=() extra=() seen_sep=0 e
  for e in "$@"; do
    if [ "$e" = "--" ]; then seen_sep=1; continue; fi
    if [ $seen_sep = 1 ]; then extra+=("$e"); else engines+=("$e"); fi
  done
  local i=0 args=()
  for e in "${engines[@]}"; do
    ctl "$e" replica create --volume="$vol" --replica-id="$vol-r$i" --size="$size" \
      >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "replica create $vol-r$i on $e"
    if [ $i = 0 ]; then args+=("--replica=$(engine_addr "$e"):local"); else args+=("--replica=$(engine_addr "$e")"); fi
    i=$((i + 1))
  done
  ctl "${engines[0]}" target create --volume="$vol" --epoch=1 --size="$size" "${args[@]}" "${extra[@]}" \
    >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "target create $vol on ${engines[0]}"
  wait_for "[ \"\$(target_state $vol ${engines[0]})\" = READY ]" 30 "volume $vol READY on ${engines[0]}"
}

volume_socket() { ctl_field "$2" nbd_socket target get --volume="$1"; }
volume_uri() { echo "nbd+unix:///$1?socket=$(volume_socket "$1" "$2")"; }

# cpu_ticks PID...: utime+stime (clock ticks) summed over live PIDs and their
# reaped children (fields 14-17 of /proc/PID/stat).
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    local stat; stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
    # The command name may hold spaces; fields after the closing paren are fixed.
    local rest="${stat##*) }"
    # shellcheck disable=SC2206
    local f=($rest)
    total=$((total + f[11] + f[12] + f[13] + f[14]))
  done
  echo "$total"
}

TC_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# fio_check JSON...: fails (with logs) unless every fio job ran I/O without errors.
fio_check() {
  python3 "$TC_LIB_DIR/fio_json.py" check "$@" || tc_fail "fio reported errors: $*"
}

# fio_nbd NAME URI [FIO ARGS...]: fio's nbd engine against URI in the foreground,
# JSON to $TC_RUN_DIR/NAME.json. fio_nbd_bg: the same through tc_spawn (pid in
# TC_PID_OF[NAME], fio's stderr in $TC_RUN_DIR/NAME.log).
_fio_nbd_args() {
  local name="$1" uri="$2"; shift 2
  FIO_ARGS=(fio --name="$name" --ioengine=nbd --uri="$uri" --verify_state_save=0
    --output-format=json --output="$TC_RUN_DIR/$name.json" "$@")
}
fio_nbd() {
  _fio_nbd_args "$@"
  "${FIO_ARGS[@]}" 2>>"$TC_RUN_DIR/$1.log"
}
fio_nbd_bg() {
  _fio_nbd_args "$@"
  tc_spawn "$1" "${FIO_ARGS[@]}"
}

# replica_index VOL ENGINE ADDR: the index I of ADDR in `target get` (replica.I.address).
replica_index() {
  ctl "$2" target get --volume="$1" | sed -n "s/^replica\.\([0-9]*\)\.address=$3\$/\1/p" | head -n 1
}

# replica_state_in_target VOL ENGINE ADDR: replica.I.state of ADDR in the target on ENGINE.
replica_state_in_target() {
  local i; i="$(replica_index "$1" "$2" "$3")"
  [ -n "$i" ] || return 1
  ctl_field "$2" "replica\.$i\.state" target get --volume="$1"
}

# ---- rebuild helpers (issue 6) ----------------------------------------------
#
#   target_field V E KEY         KEY= of `target get --volume=V` on E ("" if absent)
#   replica_data_file V E        E's replica file of V: <data-dir>/V/data
#   add_fresh_replica V SIZE E TARGET_E
#                                a new replica V-rE (generation 0) on E, added to
#                                V's target on TARGET_E: a FULL rebuild starts
#   wait_rebuilt V E SECONDS     until the target on E is READY (every replica
#                                HEALTHY) and rebuild.state is DONE or IDLE
#   nbd_flush URI                an NBD FLUSH through the export (qemu-io)
#   replica_sha256 V E...        "E=<digest>" per engine: SHA-256 of the replica data
#                                file's contents (sparse_sha256.py: holes are not read)
#   same_replicas V E...         fails (tc_fail) unless every file hashes the same

target_field() { ctl_field "$2" "$3" target get --volume="$1"; }

replica_data_file() { echo "$(_engine_dir "$2")/data/$1/data"; }

add_fresh_replica() {
  local vol="$1" size="$2" e="$3" te="$4"
  ctl "$e" replica create --volume="$vol" --replica-id="$vol-$e" --size="$size" \
    >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "replica create $vol-$e on $e"
  ctl "$te" target add-replica --volume="$vol" --replica="$(engine_addr "$e")" \
    >>"$TC_RUN_DIR/ctl.log" 2>&1 || tc_fail "target add-replica $(engine_addr "$e") to $vol on $te"
}

# _rebuilt V E: true when the target is READY and no rebuild is running.
_rebuilt() {
  local out; out="$(ctl "$2" target get --volume="$1" 2>/dev/null)" || return 1
  grep -qx 'state=READY' <<<"$out" || return 1
  grep -qxE 'rebuild\.state=(DONE|IDLE)' <<<"$out"
}
wait_rebuilt() {
  wait_for "_rebuilt $1 $2" "$3" "volume $1 READY with every replica rebuilt (target on $2)"
}

nbd_flush() {
  qemu-io -f raw -c flush "$1" >>"$TC_RUN_DIR/qemu-io.log" 2>&1 || tc_fail "NBD flush of $1"
}

replica_sha256() {
  local vol="$1" e; shift
  for e in "$@"; do
    echo "$e=$(python3 "$TC_LIB_DIR/sparse_sha256.py" "$(replica_data_file "$vol" "$e")" | cut -d' ' -f1)"
  done
}

same_replicas() {
  local vol="$1"; shift
  local sums; sums="$(replica_sha256 "$vol" "$@")"
  echo "$sums" | sed "s/^/  sha256 $vol /"
  [ "$(echo "$sums" | cut -d= -f2 | sort -u | wc -l)" = 1 ] ||
    tc_fail "replicas of $vol differ: $(echo "$sums" | tr '\n' ' ')"
}
