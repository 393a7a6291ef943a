"""One seed of the randomized fault campaign (see docs/fault_checker.md).

plan_seed() turns (seed, faults, kinds) into a schedule; it draws every
random choice (fault kinds, victims, times, durations, writer seeds, queue
depth, rebuild rate) from random.Random(seed) and nothing else, so a seed
replays the same schedule. SeedRun executes it against real tandem-engine
processes and checks, after every step:

  - every acknowledged write reads back (ack_verifier verify through the
    current target): lost == corrupt == read errors == 0,
  - no write was acknowledged by a target after a newer one took over
    (fenced acks == 0),
  - once the target is READY with no rebuild running, the data files of
    all its (HEALTHY) replicas are byte-identical,
  - no engine died on its own, no engine holds a deleted file open,
and at the end: a clean shutdown (exit 0 on SIGTERM), no NBD socket, process
or file left behind.
"""

import collections
import importlib.util
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time

from cluster import CheckFailed, Ctl, Engine, Run, TargetView, Writer, now, tail

KINDS = ["replica_kill", "replica_stop", "target_kill", "partition", "remove_readd",
         "restart_all"]
SHORT = {"replica_kill": "rk", "replica_stop": "rs", "target_kill": "tk", "partition": "pa",
         "remove_readd": "rr", "restart_all": "ra"}
VOLUME = "fcvol"
N_REPLICAS = 3
TARGET_ENGINES = ["ta", "tb"]
MiB = 1 << 20


def _load_sparse_sha256(source_dir):
    path = os.path.join(source_dir, "scripts", "lib", "sparse_sha256.py")
    spec = importlib.util.spec_from_file_location("sparse_sha256", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.digest


STAMP_MAGIC = 0x564b434d444e4154  # tests/tools/ack_stamp.h


def stamp_seq(block):
    """'run.n' of the ack_verifier stamp in `block`, 'zero', or 'garbage'."""
    if not any(block):
        return "zero"
    if int.from_bytes(block[0:8], "little") != STAMP_MAGIC:
        return "garbage"
    return fmt_seq(int.from_bytes(block[16:24], "little"))


def fmt_seq(seq):
    return "-" if seq is None else f"{seq >> 40}.{seq & ((1 << 40) - 1)}"


def read_ack_log(path, offsets):
    """{offset: newest acked seq}, {offset: newest failed seq} for `offsets`."""
    acked, failed = {}, {}
    with open(path, errors="replace") as f:
        for line in f:
            p = line.split()
            if len(p) >= 3 and p[0] in ("A", "F") and int(p[1]) in offsets:
                d = acked if p[0] == "A" else failed
                d[int(p[1])] = max(d.get(int(p[1]), 0), int(p[2]))
    return acked, failed


class Event:
    def __init__(self, t, action, **args):
        self.t = t
        self.action = action
        self.args = args

    def simple(self):
        """Runs without blocking on the target (may be run from inside another action's wait)."""
        return self.action in ("kill_replica", "restart_replica", "stop_replica", "cont_replica")


class Step:
    def __init__(self, index):
        self.index = index
        self.kinds = []
        self.desc = []
        self.events = []
        self.tail_s = 0.0
        self.target = None  # colocated: the replica index whose engine hosts the target
        self.overlap_victim = None

    def describe(self):
        return " + ".join(self.desc)


def _plan_colocated(rng, kind, step, t, tgt):
    """One primary fault of the colocated mode (the target runs on the engine
    of replica e<tgt>, its writes to that replica go in-process). Returns
    (victim, span, new tgt, engines an overlapping fault must spare): the
    target's engine moves with target kills, partitions and restarts, and
    the plan follows it so that a "replica" fault never hits it by accident."""
    others = [i for i in range(N_REPLICAS) if i != tgt]
    if kind == "replica_kill":  # a replica of the living target's, over TCP
        victim = rng.choice(others)
        down = round(rng.uniform(0.2, 5.0), 2)
        step.events += [Event(t, "kill_replica", i=victim),
                        Event(t + down, "restart_replica", i=victim)]
        step.desc.append(f"kill -9 e{victim}, restart after {down:.1f} s")
        return victim, down, tgt, {victim, tgt}
    if kind == "replica_stop":  # any engine: the target's own stops target and local replica
        victim = rng.randrange(N_REPLICAS)
        d = round(rng.uniform(0.5, 7.0), 2)
        step.events += [Event(t, "stop_replica", i=victim), Event(t + d, "cont_replica", i=victim)]
        step.desc.append(f"SIGSTOP e{victim}{' (the target and its local replica)' if victim == tgt else ''}"
                         f" for {d:.1f} s")
        return victim, d, tgt, {victim, tgt}
    if kind == "target_kill":  # the target and its local replica at once
        new = rng.choice(others)
        d = round(rng.uniform(0.0, 1.5), 2)
        down = round(rng.uniform(0.2, 5.0), 2)
        step.events += [Event(t, "kill_replica", i=tgt), Event(t + d, "reattach", engine=f"e{new}"),
                        Event(t + d + down, "restart_replica", i=tgt)]
        step.desc.append(f"kill -9 e{tgt} (target + local replica), re-attach on e{new} after "
                         f"{d:.1f} s, restart e{tgt} {down:.1f} s later")
        return tgt, d + down, new, {tgt, new}
    if kind == "partition":
        x = rng.randrange(N_REPLICAS)
        new = rng.choice([i for i in range(N_REPLICAS) if i not in (x, tgt)])
        probe = round(rng.uniform(1.0, 3.0), 2)
        heal = round(rng.uniform(1.0, 4.0), 2)
        step.events += [Event(t, "partition", x=x, probe_s=probe, engine=f"e{new}"),
                        Event(t + heal, "heal", x=x)]
        step.desc.append(f"partition: new target on e{new} over all but e{x}, old one (e{tgt}) "
                         f"written {probe:.1f} s more, e{x} re-added after {heal:.1f} s")
        return x, heal + probe, new, {x, tgt, new}
    if kind == "remove_readd":  # the target's local replica too
        victim = rng.randrange(N_REPLICAS)
        d = round(rng.uniform(0.5, 3.0), 2)
        step.events += [Event(t, "remove", i=victim), Event(t + d, "readd", i=victim)]
        step.desc.append(f"remove + delete e{victim}'s replica, re-add a fresh one after "
                         f"{d:.1f} s (full rebuild)")
        return victim, d + 2, tgt, {victim, tgt}
    if kind == "restart_all":
        sig = rng.choice(["KILL", "TERM"])
        d = round(rng.uniform(0.2, 2.0), 2)
        where = rng.randrange(N_REPLICAS)
        step.events += [Event(t, "kill_all", sig=sig),
                        Event(t + d, "restart_all", engine=f"e{where}")]
        step.desc.append(f"SIG{sig} every engine, restart all after {d:.1f} s, re-attach on e{where}")
        return None, d + 1, where, set(range(N_REPLICAS))
    raise ValueError(kind)


def plan_seed(seed, faults, kinds, overlap_p, colocated=False):
    """(params, [Step]): the whole schedule of one seed, from the seed alone.
    colocated: the target runs on a replica's engine (see _plan_colocated)."""
    rng = random.Random(seed)
    params = {
        "qd": rng.choice([4, 16, 32]),
        "fua": rng.random() < 0.3,
        "rebuild_rate": rng.choice(["0", "16M", "64M"]),
        "first_target": rng.choice(TARGET_ENGINES),
        # A small region is overwritten many times per step (ordering); a
        # large one keeps holes (full rebuilds racing writes into holes).
        "region": rng.choice(["0:32M", "0:128M", "32M:192M"]),
        "writer_seeds": [rng.getrandbits(48) for _ in range(4 * faults + 8)],
    }
    if colocated:
        params["first_target"] = f"e{rng.randrange(N_REPLICAS)}"
    tgt = int(params["first_target"][1:]) if colocated else None
    steps = []
    cycle = []
    budget = faults
    while budget > 0:
        if not cycle:
            # Every kind once per round, in random order: a seed with
            # faults >= len(kinds) injects each kind at least once.
            cycle = list(kinds)
            rng.shuffle(cycle)
        kind = cycle.pop()
        step = Step(len(steps) + 1)
        t = round(rng.uniform(0.5, 2.5), 2)
        victim = None
        span = 2.0
        spare = set()
        if colocated:
            step.target = tgt
            victim, span, tgt, spare = _plan_colocated(rng, kind, step, t, tgt)
        elif kind == "replica_kill":
            victim = rng.randrange(N_REPLICAS)
            down = round(rng.uniform(0.2, 5.0), 2)
            step.events += [Event(t, "kill_replica", i=victim),
                            Event(t + down, "restart_replica", i=victim)]
            step.desc.append(f"kill -9 e{victim}, restart after {down:.1f} s")
            span = down
        elif kind == "replica_stop":
            victim = rng.randrange(N_REPLICAS)
            d = round(rng.uniform(0.5, 7.0), 2)
            step.events += [Event(t, "stop_replica", i=victim), Event(t + d, "cont_replica", i=victim)]
            step.desc.append(f"SIGSTOP e{victim} for {d:.1f} s")
            span = d
        elif kind == "target_kill":
            d = round(rng.uniform(0.0, 1.5), 2)
            step.events += [Event(t, "kill_target"), Event(t + d, "reattach")]
            step.desc.append(f"kill -9 the target's engine, re-attach elsewhere after {d:.1f} s")
            span = d + 1
        elif kind == "partition":
            victim = rng.randrange(N_REPLICAS)
            probe = round(rng.uniform(1.0, 3.0), 2)
            heal = round(rng.uniform(1.0, 4.0), 2)
            step.events += [Event(t, "partition", x=victim, probe_s=probe),
                            Event(t + heal, "heal", x=victim)]
            step.desc.append(f"partition: new target over all but e{victim}, old one written "
                             f"{probe:.1f} s more, e{victim} re-added after {heal:.1f} s")
            span = heal + probe
        elif kind == "remove_readd":
            victim = rng.randrange(N_REPLICAS)
            d = round(rng.uniform(0.5, 3.0), 2)
            step.events += [Event(t, "remove", i=victim), Event(t + d, "readd", i=victim)]
            step.desc.append(f"remove + delete e{victim}'s replica, re-add a fresh one after "
                             f"{d:.1f} s (full rebuild)")
            span = d + 2
        elif kind == "restart_all":
            sig = rng.choice(["KILL", "TERM"])
            d = round(rng.uniform(0.2, 2.0), 2)
            where = rng.choice(TARGET_ENGINES)
            step.events += [Event(t, "kill_all", sig=sig),
                            Event(t + d, "restart_all", engine=where)]
            step.desc.append(f"SIG{sig} every engine, restart all after {d:.1f} s, "
                             f"re-attach on {where}")
            span = d + 1
        else:
            raise ValueError(kind)
        step.kinds.append(kind)
        budget -= 1
        if rng.random() < overlap_p:
            # A second, overlapping fault on another replica while the first
            # one is still being recovered from.
            kind2 = rng.choice(["replica_kill", "replica_stop"])
            can = [i for i in range(N_REPLICAS) if i != victim and i not in spare]
            if can:
                v2 = step.overlap_victim = rng.choice(can)
                t2 = round(t + rng.uniform(0.0, span), 2)
                d2 = round(rng.uniform(0.2, 4.0), 2)
                if kind2 == "replica_kill":
                    step.events += [Event(t2, "kill_replica", i=v2),
                                    Event(t2 + d2, "restart_replica", i=v2)]
                    step.desc.append(f"at +{t2 - t:.1f} s kill -9 e{v2}, restart after {d2:.1f} s")
                else:
                    step.events += [Event(t2, "stop_replica", i=v2), Event(t2 + d2, "cont_replica", i=v2)]
                    step.desc.append(f"at +{t2 - t:.1f} s SIGSTOP e{v2} for {d2:.1f} s")
                step.kinds.append(kind2)
        if rng.random() < 0.5:
            # Read everything back while the fault is not yet recovered from
            # (the writer paused): degraded reads must not return old data.
            tm = round(t + rng.uniform(0.1, span), 2)
            step.events.append(Event(tm, "mid_verify"))
            step.desc.append(f"verify all at +{tm - t:.1f} s")
        step.events.sort(key=lambda e: e.t)
        step.tail_s = round(rng.uniform(1.0, 3.0), 2)
        steps.append(step)
    return params, steps


class Member:
    """A replica of the volume as the controller records it."""

    def __init__(self, idx, replica_id):
        self.idx = idx
        self.replica_id = replica_id


class SeedRun:
    def __init__(self, seed, cfg, bins, log):
        self.seed = seed
        self.cfg = cfg
        self.bins = bins
        self._log = log
        self.params, self.steps = plan_seed(seed, cfg.faults, cfg.kinds, cfg.overlap,
                                            cfg.colocated)
        # Colocated: the replica engines host the targets too (no ta, tb).
        self.target_engines = ([f"e{i}" for i in range(N_REPLICAS)] if cfg.colocated
                               else TARGET_ENGINES)
        if cfg.region:
            self.params["region"] = cfg.region
        self.stats = {
            "faults": collections.Counter(), "acked": 0, "failed": 0, "lost": 0, "corrupt": 0,
            "divergent": 0, "fenced": 0, "rebuilds": 0, "degraded_s": 0.0, "steps": 0,
            "failed_kinds": [], "result": "", "notes": [], "seconds": 0.0, "mid_verifies": 0,
            "local_opens": 0,
        }
        self.run = None
        self.ctl = Ctl(bins["tandemctl"], cfg.in_sync)
        self.digest = _load_sparse_sha256(cfg.source_dir)
        self.engines = {}
        self.members = []
        self.removed = set()
        self.target = None  # Engine hosting the current target
        self.uri = None
        self.epoch = 0
        self.writer = None
        self.writer_runs = 0
        self.pending = []  # events of the current step not yet run
        self.last_in_sync = None
        self.lock = threading.Lock()
        self.monitor_stop = threading.Event()
        self.rebuilds_by_target = {}
        self.current_step = None
        self.deadline = None
        self.replica_generation = collections.Counter()
        self.partitioned = {}
        self.step_t0 = 0.0

    # ---------------------------------------------------------------- logging

    def log(self, msg):
        line = f"[{time.strftime('%H:%M:%S')} seed {self.seed}] {msg}"
        self._log(line)
        if self.run:
            with open(os.path.join(self.run.dir, "campaign.log"), "a") as f:
                f.write(line + "\n")

    # ------------------------------------------------------------ entry point

    def execute(self):
        """Runs the seed; returns self.stats. Never raises CheckFailed."""
        t_start = now()
        self.deadline = min(t_start + self.cfg.seed_budget_s, self.cfg.global_deadline)
        run_dir = tempfile.mkdtemp(prefix=f"tandem-fc-s{self.seed}.", dir=self.cfg.run_root)
        self.run = Run(run_dir, self.log)
        self.stats["run_dir"] = run_dir
        self.log(f"run dir {run_dir}; region={self.params['region']} qd={self.params['qd']} "
                 f"fua={self.params['fua']} "
                 f"rebuild_rate={self.params['rebuild_rate']} "
                 f"in-sync flags={'yes' if self.ctl.in_sync else 'no (quorum rule)'}")
        for s in self.steps:
            self.log(f"  plan step {s.index}: {s.describe()}")
        monitor = None
        ok = False
        try:
            self.setup()
            monitor = threading.Thread(target=self.monitor, daemon=True)
            monitor.start()
            for step in self.steps:
                self.run_step(step)
            self.shutdown()
            ok = True
            self.stats["result"] = "ok"
        except CheckFailed as e:
            msg = str(e)
            where = ""
            if self.current_step:
                self.stats["failed_kinds"] = list(self.current_step.kinds)
                where = (f"step {self.current_step.index} "
                         f"[{'+'.join(SHORT[k] for k in self.current_step.kinds)}]: ")
            self.stats["result"] = "FAIL " + where + e.short
            self.stats["failure"] = msg
            self.log("FAILED: " + msg)
        except KeyboardInterrupt:
            self.stats["result"] = "interrupted"
            self.log("interrupted")
            raise
        except Exception as e:  # a bug of the checker itself: say so, keep the evidence
            import traceback
            self.stats["result"] = f"ERROR (checker): {type(e).__name__}: {e}"
            self.stats["failure"] = traceback.format_exc()
            self.log("checker error: " + traceback.format_exc())
        finally:
            if self.writer is not None:  # a failed step: still count what it acknowledged
                try:
                    res = self.writer.stop(timeout_s=5)
                    self.stats["acked"] += res["acked"]
                    self.stats["failed"] += res["failed"] - res["fenced_failed"]
                except CheckFailed:
                    pass
                self.writer = None
            self.monitor_stop.set()
            if monitor:
                monitor.join(timeout=15)
            self.stats["rebuilds"] = sum(self.rebuilds_by_target.values())
            self.run.kill_all()
            self.stats["seconds"] = now() - t_start
            leaked = self.run.stray_pids()
            if leaked and ok:
                ok = False
                self.stats["result"] = f"FAIL: processes left running: {leaked}"
            keep = self.cfg.keep or not ok
            if keep:
                self.stats["kept"] = run_dir
                self.log(f"kept run dir {run_dir} (reproduce: {self.cfg.repro(self.seed)})")
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                if os.path.exists(run_dir):
                    self.stats["result"] = f"FAIL: could not remove {run_dir}"
        return self.stats

    # ------------------------------------------------------------------ setup

    def setup(self):
        for i in range(N_REPLICAS):
            self.engines[f"e{i}"] = Engine(self.run, f"e{i}", self.bins["engine"])
        for name in self.target_engines:
            if name not in self.engines:
                self.engines[name] = Engine(self.run, name, self.bins["engine"])
        for e in self.engines.values():
            e.start()
        for i in range(N_REPLICAS):
            rid = f"{VOLUME}-r{i}"
            self.ctl.must(self.replica_engine(i), "replica", "create", f"--volume={VOLUME}",
                          f"--replica-id={rid}", f"--size={self.cfg.volume_size}")
            self.members.append(Member(i, rid))
        self.create_target(self.engines[self.params["first_target"]], self.members, None)
        self.start_writer()

    def replica_engine(self, i):
        return self.engines[f"e{i}"]

    def endpoints(self, members):
        return [self.replica_engine(m.idx).addr for m in sorted(members, key=lambda m: m.idx)]

    # ---------------------------------------------------------------- targets

    def create_target(self, engine, members, in_sync):
        """Creates the volume's target on `engine` with a new epoch over
        `members` and waits (bounded) until it serves; it becomes current."""
        self.epoch += 1
        args = self.ctl.target_create_args(
            VOLUME, self.epoch, self.endpoints(members), self.cfg.volume_size,
            self.cfg.request_timeout_ms, self.cfg.reconnect_ms, self.params["rebuild_rate"],
            in_sync)
        self.log(f"target create on {engine.name}: epoch={self.epoch} replicas="
                 f"{','.join('e%d' % m.idx for m in members)}"
                 + (f" in-sync={in_sync}" if in_sync and self.ctl.in_sync else ""))
        give_up = now() + self.cfg.attach_timeout_s
        while True:
            r = self.ctl.run(engine, *args, timeout_s=30)
            if r.ok:
                break
            if now() > give_up:
                raise CheckFailed(f"target create on {engine.name} (epoch {self.epoch}) kept "
                                  f"failing for {self.cfg.attach_timeout_s} s: {r.error()}")
            self.log(f"  target create: {r.error().splitlines()[0]}; retrying")
            self.pause(1.0)
        view = self.wait_for(lambda: self._serving(engine), self.cfg.attach_timeout_s,
                             f"the new target on {engine.name} (epoch {self.epoch}) to serve",
                             lambda: self._view_text(engine))
        with self.lock:
            self.target = engine
            self.uri = f"nbd+unix:///{VOLUME}?socket={view.nbd_socket}"
        self.log(f"  target on {engine.name} serves: {view.summary()}")
        if self.cfg.colocated:
            self.note_local_open(engine)
        return view

    def note_local_open(self, engine):
        """Colocated: did the new target open its engine's replica in-process
        (local_replica_channel.cc logs it)? Counted for the report; the first
        target must (else the mode would silently test TCP only)."""
        mark = f"opened in-process at epoch {self.epoch}"
        with open(engine.log_path, errors="replace") as f:
            opened = any(mark in line for line in f)
        self.stats["local_opens"] += int(opened)
        self.log(f"  local replica on {engine.name}: "
                 + ("opened in-process" if opened else "NOT opened in-process"))
        if not opened and self.epoch == 1:
            raise CheckFailed(f"colocated: the target on {engine.name} did not open its local "
                              f"replica in-process (--local-replica off?)\n" + tail(engine.log_path))

    def _serving(self, engine):
        v = self.ctl.target_get(engine, VOLUME)
        return v if v and v.serving() and v.nbd_socket and os.path.exists(v.nbd_socket) else None

    def _view_text(self, engine):
        v = self.ctl.target_get(engine, VOLUME)
        return v.summary() if v else f"no target on {engine.name} (engine alive: {engine.alive()})"

    def other_target_engine(self):
        return next(self.engines[n] for n in TARGET_ENGINES if self.engines[n] is not self.target)

    def revive_target_engines(self):
        """Restarts a killed target engine (an empty spare: targets do not survive
        an engine restart; a leftover one would be destroyed)."""
        for n in TARGET_ENGINES:
            e = self.engines[n]
            if not e.alive():
                e.start()
                if self.ctl.target_get(e, VOLUME) is not None:
                    self.log(f"  {n} brought a target of {VOLUME} back after a restart; destroying it")
                    self.ctl.must(e, "target", "destroy", f"--volume={VOLUME}")

    # ---------------------------------------------------------------- writers

    def start_writer(self):
        seed = self.params["writer_seeds"][self.writer_runs % len(self.params["writer_seeds"])]
        self.writer_runs += 1
        self.writer = Writer(self.run, self.bins["ack_verifier"], self.uri,
                             os.path.join(self.run.dir, "acks.log"),
                             os.path.join(self.run.dir, "writer.log"), self.params["region"],
                             self.params["qd"], seed, self.params["fua"], self.cfg.io_timeout_ms)

    def stop_writer(self):
        if self.writer is None:
            return None
        w, self.writer = self.writer, None
        res = w.stop()
        self.stats["acked"] += res["acked"]
        # Writes a fenced-out target failed are as they should be; "failed"
        # counts the ones the serving target failed (availability).
        self.stats["failed"] += res["failed"] - res["fenced_failed"]
        self.log(f"  writer run {res['run']}: acked={res['acked']} failed={res['failed']}"
                 f" fenced_acked={res['fenced_acked']} fenced_failed={res['fenced_failed']}"
                 f"{' STALLED' if res['stalled'] else ''}")
        if res["stalled"]:
            raise CheckFailed(f"writes stalled: no write completed for {self.cfg.io_timeout_ms} ms "
                              f"(writer run {res['run']})\n" + tail(w.out_path, 15))
        if res["rc"] not in (0, 1):
            raise CheckFailed(f"the writer exited {res['rc']}\n" + tail(w.out_path, 15))
        return res

    # --------------------------------------------------------------- monitor

    def monitor(self):
        """Polls the current target: time not READY, rebuilds, the in-sync set."""
        last = now()
        while not self.monitor_stop.wait(self.cfg.monitor_interval_s):
            with self.lock:
                engine, epoch = self.target, self.epoch
            t = now()
            dt, last = t - last, t
            view = self.ctl.target_get(engine, VOLUME, timeout_s=3) if engine else None
            # Degraded: not serving with every replica HEALTHY, or with fewer
            # replicas than the volume has (a partitioned-off one).
            if view is None or view.state != "READY" or len(view.replicas) < N_REPLICAS:
                self.stats["degraded_s"] += dt
            if view is None:
                continue
            key = (engine.name, view.epoch)
            self.rebuilds_by_target[key] = max(self.rebuilds_by_target.get(key, 0),
                                               view.rebuilds_completed)
            ins = view.in_sync()
            if ins:
                self.last_in_sync = ins

    # ---------------------------------------------------------------- steps

    def pause(self, seconds):
        """Sleeps, running due simple events (replica kill/restart/stop/cont) meanwhile."""
        end = now() + seconds
        while True:
            self.run_due_simple()
            self.check_budget()
            left = end - now()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def check_budget(self):
        if now() > self.deadline:
            raise CheckFailed(f"seed {self.seed} ran out of time (budget {self.cfg.seed_budget_s:.0f} s"
                              f" per seed, --time-limit {self.cfg.time_limit_s:.0f} s overall)")
        if self.writer and not self.writer.alive():
            raise CheckFailed("the writer exited on its own\n" + tail(self.writer.out_path, 15))

    def run_due_simple(self):
        while self.pending and self.pending[0].simple() and now() >= self.step_t0 + self.pending[0].t:
            self.do(self.pending.pop(0))

    def wait_for(self, probe, timeout_s, what, describe=None):
        """Polls probe() (0.2 s) until it returns something true; CheckFailed after timeout_s."""
        end = now() + timeout_s
        while True:
            v = probe()
            if v:
                return v
            if now() > end:
                msg = f"timed out after {timeout_s:.0f} s waiting for {what}"
                if describe:
                    msg += f": {describe()}"
                raise CheckFailed(msg)
            self.pause(0.2)

    def run_step(self, step):
        self.current_step = step
        self.log(f"step {step.index}/{len(self.steps)}: {step.describe()}")
        for k in step.kinds:
            self.stats["faults"][k] += 1
        self.pending = list(step.events)
        self.step_t0 = now()
        if self.writer is None:
            self.start_writer()
        while self.pending:
            ev = self.pending[0]
            wait = self.step_t0 + ev.t - now()
            if wait > 0:
                self.pause(min(wait, 0.1))
                continue
            self.pending.pop(0)
            self.do(ev)
        self.pause(step.tail_s)
        self.wait_converged(f"step {step.index}")
        self.stop_writer()
        self.checkpoint(step)
        self.stats["steps"] += 1

    def do(self, ev):
        a = ev.args
        self.log(f"  +{now() - self.step_t0:5.2f}s {ev.action} "
                 + " ".join(f"{k}={v}" for k, v in a.items()))
        getattr(self, "act_" + ev.action)(**a)

    # ---------------------------------------------------------------- actions

    def act_kill_replica(self, i):
        self.replica_engine(i).kill9()

    def act_restart_replica(self, i):
        e = self.replica_engine(i)
        e.start()
        if self.cfg.colocated and e is not self.target:
            # It hosted the killed target: targets do not survive a restart.
            if self.ctl.target_get(e, VOLUME) is not None:
                self.log(f"  e{i} brought a target of {VOLUME} back after a restart; destroying it")
                self.ctl.must(e, "target", "destroy", f"--volume={VOLUME}")

    def act_stop_replica(self, i):
        self.replica_engine(i).sigstop()

    def act_cont_replica(self, i):
        self.replica_engine(i).sigcont()

    def act_kill_target(self):
        self.target.kill9()

    def act_reattach(self, engine=None):
        """What a controller does when the target's node died: attach on another
        engine with a higher epoch, the volume's replicas and its last known
        in-sync set. Colocated (`engine` given): the dead engine held one of
        those replicas and is restarted by a later event, so the new target
        starts with it down."""
        old = self.target
        self.stop_writer()
        if engine:
            new = self.engines[engine]
            with self.lock:  # (its restart must not take it for the current target)
                self.target = None
        else:
            self.revive_target_engines()
            new = self.other_target_engine() if old else self.engines[TARGET_ENGINES[0]]
        self.create_target(new, self.members, self.last_in_sync)
        self.start_writer()

    def act_partition(self, x, probe_s, engine=None):
        """A newer target B over the replicas other than e<x>; the old target
        A keeps its writer: every write A acknowledges after B is up is a
        fenced ack. Then A is destroyed and the campaign goes on on B."""
        a_engine = self.target
        b_engine = self.engines[engine] if engine else self.other_target_engine()
        if not b_engine.alive():
            b_engine.start()
        subset = [m for m in self.members if m.idx != x]
        in_sync = None
        if self.last_in_sync:
            keep = [m.replica_id for m in subset if m.replica_id in self.last_in_sync[1]]
            in_sync = (self.last_in_sync[0], keep) if keep else None
        a_uri = self.uri
        self.create_target(b_engine, subset, in_sync)  # B is current from here on
        self.writer.fence()
        self.log(f"  fence mark sent to the writer on the old target ({a_engine.name}, {a_uri})")
        self.pause(probe_s)
        res = self.stop_writer()
        a_view = self.ctl.target_get(a_engine, VOLUME)
        self.log(f"  old target after the partition: {a_view.summary() if a_view else 'gone'}")
        if a_view and a_view.state != "FENCED":
            self.stats["notes"].append(f"step {self.current_step.index}: old target "
                                       f"{a_view.state}, not FENCED")
        if res and res["fenced_acked"]:
            self.log(f"  !! the old target acknowledged {res['fenced_acked']} writes after the "
                     f"new one was up")
        self.ctl.must(a_engine, "target", "destroy", f"--volume={VOLUME}")
        self.partitioned = {m.idx: m for m in self.members if m.idx == x}
        self.members = subset
        self.start_writer()

    def act_heal(self, x):
        """The partition heals: e<x>'s replica (never deleted) is added back to
        the current target, which rebuilds it."""
        m = self.partitioned.pop(x, None)
        if m is None:
            return
        self.ctl.must(self.target, "target", "add-replica", f"--volume={VOLUME}",
                      f"--replica={self.replica_engine(x).addr}")
        self.members.append(m)

    def act_remove(self, i):
        m = next((m for m in self.members if m.idx == i), None)
        if m is None:
            return
        addr = self.replica_engine(i).addr
        r = self.ctl.run(self.target, "target", "remove-replica", f"--volume={VOLUME}",
                         f"--replica={addr}")
        if not r.ok:
            if "FAILED_PRECONDITION" in r.error():
                self.log(f"  remove-replica refused ({r.error()}); fault skipped")
                self.stats["notes"].append(f"step {self.current_step.index}: remove of e{i} "
                                           f"refused: {r.error()}")
                return
            raise CheckFailed(f"target remove-replica {addr}: {r.error()}")
        self.members.remove(m)
        self.removed.add(i)
        e = self.replica_engine(i)
        self.ctl.must(e, "replica", "delete", f"--volume={VOLUME}")
        left = os.path.join(e.data_dir, VOLUME)
        if os.path.exists(left):
            raise CheckFailed(f"replica delete on e{i} left {left}: {os.listdir(left)}")

    def act_readd(self, i):
        if i not in self.removed:
            return
        self.replica_generation[i] += 1
        rid = f"{VOLUME}-r{i}-{self.replica_generation[i]}"
        e = self.replica_engine(i)
        self.ctl.must(e, "replica", "create", f"--volume={VOLUME}", f"--replica-id={rid}",
                      f"--size={self.cfg.volume_size}")
        self.ctl.must(self.target, "target", "add-replica", f"--volume={VOLUME}",
                      f"--replica={e.addr}")
        self.removed.discard(i)
        self.members.append(Member(i, rid))

    def act_kill_all(self, sig):
        engines = list(self.engines.values())
        if sig == "KILL":
            for e in engines:
                e.kill9()
            return
        for e in engines:  # all at once, then wait for each
            e.send_term()
        for e in engines:
            rc = e.terminate()
            if rc != 0:
                self.stats["notes"].append(f"step {self.current_step.index}: {e.name} exited "
                                           f"{rc} on SIGTERM")

    def act_restart_all(self, engine):
        self.stop_writer()
        for e in self.engines.values():
            e.start()
        self.create_target(self.engines[engine], self.members, self.last_in_sync)
        self.start_writer()

    def act_mid_verify(self):
        """Pauses the writer and reads every block back through the current
        target, degraded as it may be. Lost/corrupt/fenced fail the step; read
        errors (no majority, target gone) are availability, noted only."""
        view = self.ctl.target_get(self.target, VOLUME) if self.target else None
        if self.writer is None or view is None or not view.serving():
            self.log(f"  mid-step verify skipped: target "
                     f"{view.state if view else 'not answering'}")
            return
        self.stop_writer()
        try:
            v = self.verify(["--uri=" + self.uri])
        except CheckFailed as e:
            self.log(f"  mid-step verify could not run: {e.short}")
            self.stats["notes"].append(f"step {self.current_step.index}: mid-step verify "
                                       f"could not run: {e.short}")
            v = None
        if v:
            self.stats["mid_verifies"] += 1
            self.log(f"  mid-step check ({view.summary()}): {v['line']}")
            if v["read_errors"]:
                self.stats["notes"].append(f"step {self.current_step.index}: {v['read_errors']}"
                                           f" read errors while degraded")
            if v["lost"] or v["corrupt"] or v["fenced_acks"]:
                self.stats["lost"] = v["lost"] + v["corrupt"]
                self.stats["fenced"] = max(self.stats["fenced"], v["fenced_acks"])
                short = " ".join(x for x in (
                    f"lost={v['lost'] + v['corrupt']}" if v["lost"] or v["corrupt"] else "",
                    f"fenced_acks={v['fenced_acks']}" if v["fenced_acks"] else "") if x)
                raise CheckFailed("\n".join(
                    [f"step {self.current_step.index} ({self.current_step.describe()}): reading "
                     f"back while degraded ({view.summary()}): {v['line']}"]
                    + v["problems"][:10] + self.per_replica_diagnosis()),
                    short=short + " (degraded read)")
        self.start_writer()

    # ------------------------------------------------------------ convergence

    def _converged(self):
        v = self.ctl.target_get(self.target, VOLUME)
        if v is None or v.state != "READY" or v.rebuild_state == "RUNNING":
            return None
        want = sorted(self.endpoints(self.members))
        have = sorted(r["address"] for r in v.replicas)
        if want != have or any(r["state"] != "HEALTHY" for r in v.replicas):
            return None
        return v

    def wait_converged(self, what):
        t0 = now()
        v = self.wait_for(self._converged, self.cfg.converge_timeout_s,
                          f"{what}: the target READY with every replica HEALTHY and no rebuild "
                          f"running", lambda: self._view_text(self.target))
        key = (self.target.name, v.epoch)
        self.rebuilds_by_target[key] = max(self.rebuilds_by_target.get(key, 0),
                                           v.rebuilds_completed)
        if v.in_sync():
            self.last_in_sync = v.in_sync()
        self.log(f"  converged in {now() - t0:.1f} s: {v.summary()}")
        return v

    # ------------------------------------------------------------- checkpoint

    def checkpoint(self, step):
        # Liveness of every engine (nothing is down by design at this point).
        for e in self.engines.values():
            if not e.alive():
                raise CheckFailed(f"engine {e.name} died on its own (exit {e.proc.returncode})\n"
                                  + tail(e.log_path))
        try:
            r = subprocess.run(["qemu-io", "-f", "raw", "-c", "flush", self.uri],
                               capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise CheckFailed("NBD flush through the target took over 60 s")
        if r.returncode != 0:
            raise CheckFailed(f"NBD flush through the target failed: {r.stderr.strip()[:300]}")
        verify = self.verify(["--uri=" + self.uri])
        digests = {}
        for m in sorted(self.members, key=lambda m: m.idx):
            path = os.path.join(self.replica_engine(m.idx).data_dir, VOLUME, "data")
            digests[f"e{m.idx}"] = self.digest(path)
        groups = collections.Counter(digests.values())
        divergent = len(digests) - max(groups.values())
        fenced = verify["fenced_acks"]
        self.stats["fenced"] = max(self.stats["fenced"], fenced)
        problems = []
        short = []
        if verify["lost"] or verify["corrupt"] or verify["read_errors"]:
            problems.append(f"acknowledged writes lost={verify['lost']} "
                            f"corrupt={verify['corrupt']} read_errors={verify['read_errors']}")
            short.append(f"lost={verify['lost'] + verify['corrupt']}"
                         + (f" read_errors={verify['read_errors']}" if verify["read_errors"] else ""))
        if fenced:
            problems.append(f"{fenced} writes acknowledged by a fenced-out target")
            short.append(f"fenced_acks={fenced}")
        if divergent:
            problems.append(f"{divergent} HEALTHY replica(s) differ: "
                            + " ".join(f"{k}={v[:12]}" for k, v in digests.items()))
            short.append(f"divergent={divergent}")
        leaks = {e.name: e.deleted_fds() for e in self.engines.values()}
        leaks = {k: v for k, v in leaks.items() if v}
        if leaks:
            problems.append(f"engines hold deleted files open: {leaks}")
            short.append("deleted files held open")
        self.log(f"  check: {verify['line']} | replicas "
                 + " ".join(f"{k}={v[:12]}" for k, v in digests.items()))
        if problems:
            self.stats["lost"] = verify["lost"] + verify["corrupt"]
            self.stats["divergent"] = divergent
            detail = [f"step {step.index} ({step.describe()}): " + "; ".join(problems)]
            detail += verify["problems"][:10]
            detail += self.per_replica_diagnosis()
            if divergent:
                detail += self.diff_diagnosis()
            raise CheckFailed("\n".join(detail), short=" ".join(short))

    VERIFY_LINE = re.compile(r"^verify: .*$", re.M)

    def verify(self, source_args):
        argv = [self.bins["ack_verifier"], "verify", f"--log={os.path.join(self.run.dir, 'acks.log')}",
                "--qd=16", "--io-timeout-ms=30000"] + source_args
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"ack_verifier verify {' '.join(source_args)} took over 300 s")
        m = self.VERIFY_LINE.search(r.stdout)
        if not m:
            raise CheckFailed(f"ack_verifier verify {' '.join(source_args)} exited {r.returncode} "
                              f"without a summary: {(r.stderr + r.stdout).strip()[-500:]}")
        f = dict(kv.split("=", 1) for kv in m.group(0).split()[1:])
        return {"line": m.group(0), "lost": int(f["lost"]), "corrupt": int(f["corrupt"]),
                "read_errors": int(f["read_errors"]), "fenced_acks": int(f.get("fenced_acks", 0)),
                "acked": int(f["acked_writes"]),
                "problems": [l for l in r.stdout.splitlines()
                             if l.startswith(("LOST", "CORRUPT", "READ_ERROR"))]}

    def per_replica_diagnosis(self):
        """Which replica holds what: each member's data file verified directly."""
        out = []
        for m in sorted(self.members, key=lambda m: m.idx):
            path = os.path.join(self.replica_engine(m.idx).data_dir, VOLUME, "data")
            try:
                v = self.verify([f"--file={path}"])
                out.append(f"  replica e{m.idx} ({m.replica_id}) file: lost={v['lost']} "
                           f"corrupt={v['corrupt']}")
            except CheckFailed as e:
                out.append(f"  replica e{m.idx}: {e}")
        return out

    def diff_diagnosis(self, show=8):
        """The blocks where the replicas' data files differ, with the stamp
        (writer sequence number) each replica holds and what the ack log says."""
        paths = {f"e{m.idx}": os.path.join(self.replica_engine(m.idx).data_dir, VOLUME, "data")
                 for m in sorted(self.members, key=lambda m: m.idx)}
        files = {k: open(p, "rb") for k, p in paths.items()}
        try:
            size = max(os.fstat(f.fileno()).st_size for f in files.values())
            diffs = []
            ndiff = 0
            bs = 4096
            for off in range(0, size, MiB):
                chunks = {k: f.read(MiB) for k, f in files.items()}
                chunks = {k: c + bytes(MiB - len(c)) for k, c in chunks.items()}
                if len(set(chunks.values())) == 1:
                    continue
                for b in range(0, MiB, bs):
                    blocks = {k: c[b:b + bs] for k, c in chunks.items()}
                    if len(set(blocks.values())) > 1:
                        ndiff += 1
                        if len(diffs) < show:
                            diffs.append((off + b, {k: stamp_seq(v) for k, v in blocks.items()}))
        finally:
            for f in files.values():
                f.close()
        acked, failed = read_ack_log(os.path.join(self.run.dir, "acks.log"),
                                     {o for o, _ in diffs})
        out = [f"  {ndiff} blocks differ between the replicas; the first {len(diffs)}:"]
        for off, seqs in diffs:
            out.append(f"    offset={off} " + " ".join(f"{k}:{v}" for k, v in seqs.items())
                       + f" | log: newest acked={fmt_seq(acked.get(off))} "
                       f"newest failed={fmt_seq(failed.get(off))}")
        return out

    # --------------------------------------------------------------- shutdown

    def shutdown(self):
        self.current_step = None
        self.stop_writer()
        self.monitor_stop.set()
        self.ctl.must(self.target, "target", "destroy", f"--volume={VOLUME}")
        # (An engine killed with -9 leaves its socket file behind, legitimately;
        # the one that destroyed the target must not.)
        sock = os.path.join(self.target.nbd_dir, f"{VOLUME}.sock")
        if os.path.exists(sock):
            raise CheckFailed(f"engine {self.target.name} left {sock} after target destroy")
        for e in self.engines.values():
            rc = e.terminate()
            if rc != 0:
                raise CheckFailed(f"engine {e.name} exited {rc} on SIGTERM\n" + tail(e.log_path))
        # Nothing on disk but the members' replicas: {data, meta} in <data-dir>/<volume>/,
        # beside the engine's identity file (service/engine_identity.h), which every
        # engine keeps for good.
        member_idx = {m.idx for m in self.members}
        for name, e in self.engines.items():
            want = {VOLUME} if name.startswith("e") and int(name[1:]) in member_idx else set()
            have = set(os.listdir(e.data_dir)) - {"@engine-identity"}
            if have != want:
                raise CheckFailed(f"engine {name}'s data dir holds {sorted(have)}, "
                                  f"expected {sorted(want)}")
            if want:
                files = set(os.listdir(os.path.join(e.data_dir, VOLUME)))
                if files != {"data", "meta"}:
                    raise CheckFailed(f"engine {name}'s replica dir holds {sorted(files)}")
        alive = self.run.alive_procs()
        if alive:
            raise CheckFailed(f"processes still running after shutdown: "
                              f"{[(n, p.pid) for n, p in alive]}")
