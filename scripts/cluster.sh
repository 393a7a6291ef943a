#!/usr/bin/env bash
# A local Tandem cluster to explore, on 127.0.0.1 (issue 14):
#
#   scripts/cluster.sh up [--nodes=3] [--netns] [--dir=DIR] [--build=DIR]
#   scripts/cluster.sh down [--dir=DIR]
#   scripts/cluster.sh status [--dir=DIR]
#   scripts/cluster.sh restart-engine --node=nI [--dir=DIR] [--build=DIR]
#
# `up` starts tandem-controller (embedded SQLite store) and, per simulated
# node nI, a tandem-engine and a tandem-node registered with the controller
# (zone zone-I), then prints one `name=value` line per endpoint:
#   controller_csi=unix:///.../controller/csi.sock
#   node_n0_csi=unix:///.../n0/csi.sock   node_n0_engine=127.0.0.1:PORT   node_n0_id=n0
# so any CSI client (a kubelet-like driver, csc, tandemctl --engine=...) can be
# pointed at it. The daemons keep running after `up` returns.
# `down` removes everything `up` made — mounts and loop devices under DIR,
# the FUSE exports, every process, DIR itself — also after a crash of any
# daemon, and is safe to run twice. DIR defaults to /var/tmp/tandem-cluster.
# `restart-engine` starts node nI's tandem-engine again on its old ports (after
# a kill -9): the volume targets on other nodes reconnect it and rebuild it.
# With --netns every simulated node runs in its own network namespace
# (<ns>-nI, made by the script), joined by a veth pair to a bridge in a hub
# namespace (<ns>-hub, where the controller runs) on 10.77.0.0/24: the
# controller is 10.77.0.1, node nI 10.77.0.(10+I); nothing is added to the
# host's own network. The engines bind their node's address (the data and
# management ports are unauthenticated here: --insecure-bind, a cluster to
# explore). The CSI endpoints stay unix sockets (reachable from the host);
# each node's line node_nI_netns=NAME says where its addresses are
# (`ip netns exec NAME tandemctl --engine=...`). `down` deletes the
# namespaces too.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cmd="${1:-}"
[ $# -gt 0 ] && shift
dir=/var/tmp/tandem-cluster nodes=3 build="$root/build/release" node="" netns=0
for arg in "$@"; do
  case "$arg" in
    --nodes=*) nodes="${arg#*=}" ;;
    --dir=*) dir="${arg#*=}" ;;
    --build=*) build="${arg#*=}" ;;
    --node=*) node="${arg#*=}" ;;
    --netns) netns=1 ;;
    *) echo "cluster.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done
case "$nodes" in ''|*[!0-9]*) echo "cluster.sh: --nodes must be 1..9" >&2; exit 2 ;; esac
[ "$nodes" -ge 1 ] && [ "$nodes" -le 9 ] || { echo "cluster.sh: --nodes must be 1..9" >&2; exit 2; }

log() { echo "[cluster $(date +%H:%M:%S)] $*" >&2; }

# wait_file FILE SECONDS: until FILE exists and is not empty.
wait_file() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

# spawn NAME DIR CMD...: a daemon in its own session, pid in DIR/NAME.pid.
spawn() {
  local name="$1" d="$2"; shift 2
  setsid "$@" >>"$d/$name.log" 2>&1 </dev/null &
  echo $! >"$d/$name.pid"
}

stop_pid_file() {
  local f="$1" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# start_engine nI DATA_PORT GRPC_PORT (0: any; the ports are written to
# data_port and grpc_port in the node's directory).
start_engine() {
  local d="$dir/$1" addr=127.0.0.1 wrap=() extra=()
  if [ -f "$d/netns" ]; then
    addr="$(cat "$d/addr")"
    wrap=(nsenter --net="/run/netns/$(cat "$d/netns")")
    extra=(--insecure-bind)
  fi
  rm -f "$d/data_port" "$d/grpc_port"
  spawn engine "$d" "${wrap[@]}" "$build/replica-engine/service/tandem-engine" --data-dir="$d/data" \
    --node-id="$1" --listen="$addr:$2" --port-file="$d/data_port" \
    --grpc-listen="$addr:$3" --grpc-port-file="$d/grpc_port" --nbd-dir="$d/nbd" "${extra[@]}" \
    --controller="unix://$dir/controller/csi.sock"
  wait_file "$d/grpc_port" 20 || { log "engine $1 did not start: $(tail -3 "$d/engine.log")"; exit 1; }
}

restart_engine() {
  local d="$dir/$node"
  [ -n "$node" ] && [ -f "$d/data_port" ] || { log "restart-engine: no node '$node' in $dir"; exit 2; }
  # A process just killed -9 may not be gone yet: give it 2 s.
  local i
  for ((i = 0; i < 20; i++)); do
    [ -f "$d/engine.pid" ] && kill -0 "$(cat "$d/engine.pid")" 2>/dev/null || break
    sleep 0.1
  done
  if [ -f "$d/engine.pid" ] && kill -0 "$(cat "$d/engine.pid")" 2>/dev/null; then
    log "engine $node is running"; return 0
  fi
  # A FUSE export the killed engine left mounted would block the new one's.
  local m
  while read -r m; do
    fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$d/nbd/" 'index($2, d) == 1 && $3 == "fuse.tandem" { print $2 }' /proc/mounts)
  start_engine "$node" "$(cat "$d/data_port")" "$(cat "$d/grpc_port")"
  log "engine $node restarted on $(cat "$d/addr" 2>/dev/null || echo 127.0.0.1):$(cat "$d/data_port") (gRPC $(cat "$d/grpc_port"))"
}

# The namespaces' prefix: from DIR, so two clusters do not collide.
ns_prefix() { echo "tdm$(echo -n "$dir" | md5sum | cut -c1-6)"; }

# make_hub: the hub namespace with its bridge (10.77.0.1), recorded in
# DIR/netns.list before it exists so `down` finds it whatever fails next.
make_hub() {
  local p; p="$(ns_prefix)"
  echo "$p-hub" >>"$dir/netns.list"
  ip netns del "$p-hub" 2>/dev/null || true  # left by a crashed run in this DIR
  ip netns add "$p-hub"
  ip -n "$p-hub" link set lo up
  ip -n "$p-hub" link add br0 type bridge
  ip -n "$p-hub" addr add 10.77.0.1/24 dev br0
  ip -n "$p-hub" link set br0 up
}

# make_node_netns I: namespace <p>-nI with eth0 = 10.77.0.(10+I)/24, its
# veth peer on the hub's bridge.
make_node_netns() {
  local p i="$1" ns; p="$(ns_prefix)"; ns="$p-n$i"
  echo "$ns" >>"$dir/netns.list"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "${p}h$i" type veth peer name "${p}n$i"
  ip link set "${p}h$i" netns "$p-hub"
  ip -n "$p-hub" link set "${p}h$i" master br0 up
  ip link set "${p}n$i" netns "$ns"
  ip -n "$ns" link set "${p}n$i" name eth0
  ip -n "$ns" addr add "10.77.0.$((10 + i))/24" dev eth0
  ip -n "$ns" link set eth0 up
  echo "$ns" >"$dir/n$i/netns"
  echo "10.77.0.$((10 + i))" >"$dir/n$i/addr"
}

up() {
  local engine="$build/replica-engine/service/tandem-engine" node_bin="$build/node-plugin/tandem-node"
  local controller="$build/controller/tandem-controller"
  if [ ! -x "$engine" ] || [ ! -x "$node_bin" ] || [ ! -x "$controller" ]; then
    log "building tandem-engine, tandem-node, tandem-controller in $build"
    "$root/scripts/install-deps.sh"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j"${TANDEM_JOBS:-2}" --target tandem-engine tandem-node tandem-controller
  fi
  [ -e "$dir/controller/controller.pid" ] && { log "a cluster is already up in $dir (down first)"; exit 1; }
  mkdir -p "$dir/controller"
  chmod 0700 "$dir"
  local hub=()
  if [ $netns = 1 ]; then
    make_hub
    hub=(nsenter --net="/run/netns/$(ns_prefix)-hub")
  fi
  spawn controller "$dir/controller" "${hub[@]}" "$controller" \
    --endpoint="unix://$dir/controller/csi.sock" --data-dir="$dir/controller/store"
  local i
  for ((i = 0; i < 100; i++)); do [ -S "$dir/controller/csi.sock" ] && break; sleep 0.1; done
  [ -S "$dir/controller/csi.sock" ] || { log "tandem-controller did not start: $(tail -3 "$dir/controller/controller.log")"; exit 1; }
  echo "controller_csi=unix://$dir/controller/csi.sock"
  local n
  for ((n = 0; n < nodes; n++)); do
    local d="$dir/n$n"
    mkdir -p "$d/data"
    local addr=127.0.0.1 wrap=()
    if [ $netns = 1 ]; then
      make_node_netns "$n"
      addr="$(cat "$d/addr")"
      wrap=(nsenter --net="/run/netns/$(cat "$d/netns")")
    fi
    start_engine "n$n" 0 0
    local grpc="$addr:$(cat "$d/grpc_port")"
    spawn node "$d" "${wrap[@]}" "$node_bin" --endpoint="unix://$d/csi.sock" --node-id="n$n" \
      --engine="$grpc" --node-address="$addr" --state-dir="$d/state" --zone="zone-$n" \
      --controller="unix://$dir/controller/csi.sock"
    for ((i = 0; i < 100; i++)); do [ -S "$d/csi.sock" ] && break; sleep 0.1; done
    [ -S "$d/csi.sock" ] || { log "tandem-node n$n did not start: $(tail -3 "$d/node.log")"; exit 1; }
    echo "node_n${n}_id=n$n"
    echo "node_n${n}_csi=unix://$d/csi.sock"
    echo "node_n${n}_engine=$grpc"
    echo "node_n${n}_data=$addr:$(cat "$d/data_port")"
    if [ $netns = 1 ]; then echo "node_n${n}_netns=$(cat "$d/netns")"; fi
  done
}

down() {
  [ -d "$dir" ] || { log "nothing in $dir"; return 0; }
  # Mounts first, deepest first (pods' bind mounts before staging mounts).
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done < <(awk -v d="$dir" 'index($2, d) == 1 && $3 != "fuse.tandem" { print $2 }' /proc/mounts | sort -r)
  # Loop devices over files under DIR (the FUSE file exports).
  local line dev
  while read -r line; do
    dev="${line%%:*}"
    [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
  done < <(losetup -a 2>/dev/null | grep -F "($dir/" || true)
  local d
  for d in "$dir"/n*; do
    [ -d "$d" ] || continue
    stop_pid_file "$d/node.pid"
    stop_pid_file "$d/engine.pid"
  done
  stop_pid_file "$dir/controller/controller.pid"
  # FUSE mounts left by an engine that died without unmounting.
  while read -r m; do
    fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
  # The namespaces (their veth pairs and the bridge go with them).
  local ns
  if [ -f "$dir/netns.list" ]; then
    while read -r ns; do
      ip netns del "$ns" 2>/dev/null || true
    done <"$dir/netns.list"
  fi
  rm -rf "$dir"
  log "cluster in $dir removed"
}

status() {
  local f
  for f in "$dir"/controller/controller.pid "$dir"/n*/engine.pid "$dir"/n*/node.pid; do
    [ -f "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "${f#"$dir"/} running"; else echo "${f#"$dir"/} DEAD"; fi
  done
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart-engine) restart_engine ;;
  *) sed -n '2,23p' "$0"; exit 2 ;;
esac
