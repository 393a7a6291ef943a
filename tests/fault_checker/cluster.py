"""Processes of a fault-checker run: tandem-engine instances, the tandemctl
adapter (the controller's view of a target) and ack_verifier writers.

Everything here is bounded: every wait has a deadline and raises CheckFailed
(with what it was waiting for) when it passes. Nothing is left running: every
process is started through a Run, which kills what is still alive on close().
"""

import os
import re
import shutil
import signal
import subprocess
import time

# Children get SIGKILL when this process dies, however it dies (setpriv is in
# util-linux, which every Debian has): a killed checker leaks no engine.
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []

GRACE_TERM_S = 20  # an engine gets this long to exit on SIGTERM


class CheckFailed(Exception):
    """A check of the campaign failed; the message says which and why.
    `short` is a one-line summary for the table (default: the first line)."""

    def __init__(self, message, short=None):
        super().__init__(message)
        self.short = short or message.splitlines()[0]


def now():
    return time.monotonic()


def tail(path, lines=30):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def parse_fields(text):
    """key=value lines (tandemctl's output) -> dict; the first value of a key wins."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and k not in out:
            out[k] = v
    return out


class Run:
    """One run directory and every process started in it."""

    def __init__(self, run_dir, log):
        self.dir = run_dir
        self.procs = []  # (name, Popen)
        self.log = log

    def spawn(self, name, argv, out_path):
        out = open(out_path, "ab")
        try:
            p = subprocess.Popen(_PDEATHSIG + argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        self.procs.append((name, p))
        return p

    def kill_all(self):
        """SIGCONT + SIGKILL to everything still alive, then reaps it (bounded)."""
        for _, p in reversed(self.procs):
            if p.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(p.pid, sig)
                    except ProcessLookupError:
                        pass
        for name, p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.log(f"process {name} (pid {p.pid}) survived SIGKILL for 10 s")

    def alive_procs(self):
        return [(n, p) for n, p in self.procs if p.poll() is None]

    def stray_pids(self):
        """Pids of any process on the machine whose command line names the run dir."""
        out = []
        needle = self.dir.encode()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if needle in f.read():
                        out.append(int(pid))
            except OSError:
                pass
        return out


class Engine:
    """One tandem-engine process: its own data dir, restartable on the same ports."""

    def __init__(self, run, name, binary):
        self.run = run
        self.name = name
        self.binary = binary
        self.dir = os.path.join(run.dir, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.nbd_dir = os.path.join(self.dir, "nbd")
        self.log_path = os.path.join(self.dir, "engine.log")
        self.port = 0
        self.grpc_port = 0
        self.proc = None
        self.stopped = False  # SIGSTOPped by us
        self.starts = 0

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_addr(self):
        return f"127.0.0.1:{self.grpc_port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20):
        """Starts the engine (on its old ports after the first start)."""
        if self.alive():
            return
        os.makedirs(self.data_dir, exist_ok=True)
        os.makedirs(self.nbd_dir, exist_ok=True)
        deadline = now() + timeout
        while True:
            port_file = os.path.join(self.dir, "port")
            grpc_file = os.path.join(self.dir, "grpc_port")
            for f in (port_file, grpc_file):
                if os.path.exists(f):
                    os.unlink(f)
            argv = [self.binary, f"--data-dir={self.data_dir}", f"--node-id={self.name}",
                    f"--listen=127.0.0.1:{self.port}", f"--port-file={port_file}",
                    f"--grpc-listen=127.0.0.1:{self.grpc_port}", f"--grpc-port-file={grpc_file}",
                    f"--nbd-dir={self.nbd_dir}"]
            # TANDEM_ENGINE_EXTRA_FLAGS: flags every engine of the run gets
            # (e.g. --target-loop=server, to check the in-process local replica).
            argv += os.environ.get("TANDEM_ENGINE_EXTRA_FLAGS", "").split()
            with open(self.log_path, "ab") as f:
                f.write(f"==== start {self.starts + 1}: {' '.join(argv)}\n".encode())
            self.proc = self.run.spawn(self.name, argv, self.log_path)
            self.starts += 1
            self.stopped = False
            while now() < deadline:
                if self.proc.poll() is not None:
                    break
                if _nonempty(port_file) and _nonempty(grpc_file):
                    self.port = int(open(port_file).read())
                    self.grpc_port = int(open(grpc_file).read())
                    return
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill9()
                raise CheckFailed(f"engine {self.name} did not write its port files in {timeout} s\n"
                                  + tail(self.log_path))
            # Exited during start: a port of the previous run may still be
            # held for a moment; retry until the deadline.
            if now() >= deadline:
                raise CheckFailed(f"engine {self.name} exited during start "
                                  f"(rc {self.proc.returncode})\n" + tail(self.log_path))
            time.sleep(0.3)

    def kill9(self):
        if not self.alive():
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"engine {self.name} survived SIGKILL for 10 s")
        self.stopped = False

    def send_term(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            self.term_sent = True

    def terminate(self):
        """SIGTERM (unless send_term() sent it); returns the exit status. An
        engine that ignores it is a failure."""
        if not self.alive():
            self.term_sent = False
            return self.proc.returncode if self.proc else 0
        if not getattr(self, "term_sent", False):
            self.send_term()
        self.term_sent = False
        try:
            rc = self.proc.wait(timeout=GRACE_TERM_S)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise CheckFailed(f"engine {self.name} ignored SIGTERM for {GRACE_TERM_S} s")
        self.stopped = False
        return rc

    def sigstop(self):
        if self.alive() and not self.stopped:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.stopped = True

    def sigcont(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def deleted_fds(self):
        """Files under the run dir this engine holds open although they were deleted."""
        out = []
        if not self.alive():
            return out
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            return out
        for fd in names:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.startswith(self.run.dir) and target.endswith(" (deleted)"):
                out.append(target)
        return out


def _nonempty(path):
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


class CtlResult:
    def __init__(self, rc, out, err):
        self.rc = rc
        self.out = out
        self.err = err
        self.fields = parse_fields(out)

    @property
    def ok(self):
        return self.rc == 0

    def error(self):
        return (self.err.strip() or self.out.strip())[:500]


class TargetView:
    """What `tandemctl target get` says about a target."""

    def __init__(self, fields):
        self.fields = fields
        self.state = fields.get("state", "")
        self.epoch = int(fields.get("epoch", "0") or 0)
        self.generation = fields.get("generation", "")
        self.generation_id = fields.get("generation_id")  # None until the interface lands
        self.nbd_socket = fields.get("nbd_socket", "")
        self.rebuild_state = fields.get("rebuild.state", "")
        self.rebuilds_completed = int(fields.get("rebuilds_completed", "0") or 0)
        self.replicas = []
        i = 0
        while f"replica.{i}.address" in fields:
            p = f"replica.{i}."
            self.replicas.append({
                "address": fields[p + "address"],
                "replica_id": fields.get(p + "replica_id", ""),
                "state": fields.get(p + "state", ""),
                "generation": fields.get(p + "generation", ""),
                "generation_id": fields.get(p + "generation_id"),
                "last_error": fields.get(p + "last_error", ""),
            })
            i += 1

    def serving(self):
        return self.state in ("READY", "DEGRADED")

    def in_sync(self):
        """(generation id, [replica ids]): the target's in-sync record as
        `target get` reports it (in_sync=), else the HEALTHY replicas at the
        target's generation id; None when the engine reports no generation id."""
        gid = self.generation_id
        if not gid or int(gid, 16) == 0:
            return None
        ids = [i for i in self.fields.get("in_sync", "").split(",") if i]
        if not ids:
            ids = [r["replica_id"] for r in self.replicas
                   if r["state"] == "HEALTHY" and r["replica_id"]
                   and r["generation_id"] in (None, gid)]
        return (gid, ids) if ids else None

    def summary(self):
        reps = " ".join(f"{r['address']}={r['state']}/g{r['generation']}" for r in self.replicas)
        return (f"state={self.state} epoch={self.epoch} gen={self.generation} "
                f"rebuild={self.rebuild_state} [{reps}]")


class Ctl:
    """tandemctl, as a controller would use it. The in-sync requirement of
    CreateTarget (--in-sync-generation-id / --in-sync-replica) is used only
    when this tandemctl knows the flags (probed once) and a target reported
    generation ids; otherwise targets are created under the quorum rule."""

    def __init__(self, binary, in_sync_mode="auto"):
        self.binary = binary
        if in_sync_mode == "on":
            self.in_sync = True
        elif in_sync_mode == "off":
            self.in_sync = False
        else:
            self.in_sync = self._probe_in_sync()

    def _probe_in_sync(self):
        # Against a port where nothing listens: exit 2 "unknown flag" when the
        # flags are not there, otherwise a connection error (exit 1).
        r = subprocess.run([self.binary, "--engine=127.0.0.1:1", "--deadline-ms=200", "target",
                            "create", "--volume=probe", "--epoch=1", "--replica=127.0.0.1:1",
                            "--in-sync-generation-id=1", "--in-sync-replica=probe"],
                           capture_output=True, text=True, timeout=30)
        return "unknown flag" not in (r.stderr + r.stdout)

    def run(self, engine, *args, timeout_s=30):
        argv = [self.binary, f"--engine={engine.grpc_addr}", f"--deadline-ms={int(timeout_s * 1000)}"]
        argv += list(args)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 15)
        except subprocess.TimeoutExpired:
            return CtlResult(124, "", f"tandemctl {' '.join(args)}: no answer in {timeout_s + 15} s")
        return CtlResult(r.returncode, r.stdout, r.stderr)

    def must(self, engine, *args, timeout_s=30):
        r = self.run(engine, *args, timeout_s=timeout_s)
        if not r.ok:
            raise CheckFailed(f"tandemctl {' '.join(args)} on {engine.name}: {r.error()}")
        return r

    def target_get(self, engine, volume, timeout_s=5):
        if not engine.alive():
            return None
        r = self.run(engine, "target", "get", f"--volume={volume}", timeout_s=timeout_s)
        return TargetView(r.fields) if r.ok else None

    def target_create_args(self, volume, epoch, endpoints, size, timeout_ms, reconnect_ms,
                           rebuild_rate, in_sync):
        args = ["target", "create", f"--volume={volume}", f"--epoch={epoch}", f"--size={size}",
                f"--timeout-ms={timeout_ms}", f"--reconnect-interval-ms={reconnect_ms}",
                f"--rebuild-rate={rebuild_rate}"]
        args += [f"--replica={e}" for e in endpoints]
        if self.in_sync and in_sync:
            gen_id, ids = in_sync
            args.append(f"--in-sync-generation-id={gen_id}")
            args += [f"--in-sync-replica={i}" for i in ids]
        return args


class Writer:
    """ack_verifier write --until-stopped against one target: one run of the log."""

    SUMMARY = re.compile(r"^write: run=(\d+) .*acked=(\d+) failed=(\d+) .*fenced_acked=(\d+)"
                         r" fenced_failed=(\d+)(.*)$", re.M)

    def __init__(self, run, binary, uri, log_path, out_path, region, qd, seed, fua,
                 io_timeout_ms):
        self.run = run
        self.out_path = out_path
        argv = [binary, "write", f"--uri={uri}", f"--log={log_path}", f"--region={region}",
                f"--qd={qd}", f"--seed={seed}", "--until-stopped", "--allow-errors",
                f"--io-timeout-ms={io_timeout_ms}"]
        if fua:
            argv.append("--fua")
        self.io_timeout_s = io_timeout_ms / 1000
        with open(out_path, "ab") as f:
            f.write(f"==== {' '.join(argv)}\n".encode())
        self.proc = run.spawn("writer", argv, out_path)
        self.started = now()
        self.fenced_at = None

    def alive(self):
        return self.proc.poll() is None

    def fence(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGUSR1)
            self.fenced_at = now()

    def stop(self, timeout_s=None):
        """SIGTERM, then the summary: dict(rc, run, acked, failed, fenced_acked,
        fenced_failed, stalled). Waits up to timeout_s (default: the I/O timeout
        + 15 s: in-flight writes may take that long to fail)."""
        timeout_s = self.io_timeout_s + 15 if timeout_s is None else timeout_s
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            raise CheckFailed(f"the writer did not stop within {timeout_s:.0f} s of "
                              f"SIGTERM\n" + tail(self.out_path))
        text = open(self.out_path, errors="replace").read()
        ms = list(self.SUMMARY.finditer(text))
        if not ms:
            raise CheckFailed(f"the writer exited {rc} without a summary\n" + tail(self.out_path))
        m = ms[-1]
        return {"rc": rc, "run": int(m.group(1)), "acked": int(m.group(2)),
                "failed": int(m.group(3)), "fenced_acked": int(m.group(4)),
                "fenced_failed": int(m.group(5)), "stalled": "STALLED" in m.group(6)}
