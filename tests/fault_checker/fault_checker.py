#!/usr/bin/env python3
"""Randomized, seeded fault campaign against real tandem-engine processes.

  tests/fault_checker/fault_checker.py --seeds=N [--faults-per-seed=K] [--keep]
  tests/fault_checker/fault_checker.py --seed=S[,S...] [--faults-per-seed=K] [--kinds=a,b]

Every seed starts three replica engines (e0 e1 e2) and two target engines
(ta tb) on 127.0.0.1, each with its own data dir under a fresh run dir in
/var/tmp, creates a 3-replica volume, and writes stamped blocks through the
target's NBD export with tests/tools/ack_verifier while it injects faults at
times drawn from the seed: kill -9 of a replica engine (restarted on its
ports and data dir), SIGSTOP/SIGCONT of one, kill -9 of the target's engine
(re-attach on the other with a higher epoch), a partition (a second target
with a higher epoch over two of the replicas; the old one must be fenced),
removal and re-add of a replica (full rebuild) under load, and a restart of
everything. After every step it checks that no acknowledged write is lost,
no fenced target acknowledged anything and the replicas are byte-identical;
at the end that nothing leaked. A failing seed keeps its run dir and prints
the command that replays it. Prints a table; exits 1 when anything that must
be 0 is not (lost, divergent, fenced acks) or a seed failed otherwise.

--colocated: no ta, tb; the target runs on a replica's engine (that replica
in-process) and a target kill kills that replica with it.

See docs/fault_checker.md.
"""

import argparse
import collections
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from campaign import KINDS, SHORT, SeedRun  # noqa: E402
from cluster import Ctl  # noqa: E402

SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Randomized fault checker of the Tandem data plane (docs/fault_checker.md).")
    p.add_argument("--seeds", type=int, default=None,
                   help="run this many seeds, --first-seed, --first-seed+1, ... (default 1)")
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--seed", default=None,
                   help="comma-separated seeds to run (instead of --seeds)")
    p.add_argument("--faults-per-seed", type=int, default=6,
                   help="steps per seed, one fault each (default 6: every kind once); "
                   "overlapping faults (--overlap) come on top")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="comma-separated fault kinds to draw from (default: all): "
                   + ", ".join(KINDS))
    p.add_argument("--overlap", type=float, default=0.3,
                   help="probability that a step gets a second, overlapping replica fault")
    p.add_argument("--colocated", action="store_true",
                   help="run the target on the engine of one of the volume's replicas (no ta, "
                   "tb): its writes to that replica go through the in-process local channel, "
                   "and a target kill kills that replica too")
    p.add_argument("--keep", action="store_true", help="keep every run dir, also on success")
    p.add_argument("--build-dir", default=os.path.join(SOURCE_DIR, "build", "dev"),
                   help="build tree with the binaries (env TANDEM_ENGINE, TANDEMCTL and "
                   "ACK_VERIFIER override it)")
    p.add_argument("--run-root", default="/var/tmp", help="where run dirs are made")
    p.add_argument("--volume-size", default="256M")
    p.add_argument("--region", default=None,
                   help="OFF:LEN the writers write (default: drawn per seed)")
    p.add_argument("--in-sync", choices=["auto", "on", "off"], default="auto",
                   help="pass the last observed in-sync set to target create "
                   "(auto: when tandemctl has --in-sync-generation-id)")
    p.add_argument("--request-timeout-ms", type=int, default=2000,
                   help="the targets' per-request replica timeout")
    p.add_argument("--reconnect-ms", type=int, default=200,
                   help="the targets' reconnect interval for faulted replicas")
    p.add_argument("--io-timeout-ms", type=int, default=60000,
                   help="a writer with no write completing for this long has stalled (a failure)")
    p.add_argument("--converge-timeout", type=float, default=120,
                   help="seconds a step may take to get every replica HEALTHY again")
    p.add_argument("--attach-timeout", type=float, default=60,
                   help="seconds a new target may take to serve")
    p.add_argument("--time-limit", type=float, default=0,
                   help="seconds for the whole campaign (0: none); a seed running past it "
                   "fails, later seeds are not run")
    p.add_argument("--skip-if-missing", action="store_true",
                   help="exit 77 (ctest: skipped) when a binary is missing")
    p.add_argument("--stop-on-failure", action="store_true",
                   help="stop at the first failing seed")
    p.add_argument("--quiet", action="store_true", help="no progress lines, only the table")
    a = p.parse_args(argv)
    if a.seed:
        a.seed_list = [int(s) for s in a.seed.split(",") if s]
    else:
        a.seed_list = list(range(a.first_seed, a.first_seed + (a.seeds or 1)))
    a.kinds = [k for k in a.kinds.split(",") if k]
    for k in a.kinds:
        if k not in KINDS:
            p.error(f"unknown fault kind {k!r}; kinds: {', '.join(KINDS)}")
    if not a.kinds:
        p.error("--kinds is empty")
    if a.faults_per_seed < 1:
        p.error("--faults-per-seed must be at least 1")
    return a


class Config:
    def __init__(self, a):
        self.faults = a.faults_per_seed
        self.kinds = a.kinds
        self.overlap = a.overlap
        self.colocated = a.colocated
        self.keep = a.keep
        self.run_root = a.run_root
        self.volume_size = a.volume_size
        self.region = a.region
        self.in_sync = a.in_sync
        self.request_timeout_ms = a.request_timeout_ms
        self.reconnect_ms = a.reconnect_ms
        self.io_timeout_ms = a.io_timeout_ms
        self.converge_timeout_s = a.converge_timeout
        self.attach_timeout_s = a.attach_timeout
        self.monitor_interval_s = 0.5
        self.time_limit_s = a.time_limit
        self.global_deadline = (time.monotonic() + a.time_limit) if a.time_limit else float("inf")
        self.source_dir = SOURCE_DIR
        # Generous: a step normally takes 10-30 s.
        self.seed_budget_s = 120 + self.faults * (self.converge_timeout_s + 90)
        kinds = "" if set(a.kinds) == set(KINDS) else f" --kinds={','.join(a.kinds)}"
        # From the source dir (ctest runs it from elsewhere).
        self._repro = (f"(cd {SOURCE_DIR} && tests/fault_checker/fault_checker.py "
                       f"--seed={{seed}} --faults-per-seed={self.faults}{kinds}"
                       + (" --colocated" if a.colocated else "")
                       + (f" --overlap={a.overlap}" if a.overlap != 0.3 else "")
                       + (f" --region={a.region}" if a.region else "")
                       + (f" --volume-size={a.volume_size}" if a.volume_size != "256M" else "")
                       + (f" --in-sync={a.in_sync}" if a.in_sync != "auto" else "") + ")")

    def repro(self, seed):
        return self._repro.format(seed=seed)


def find_binaries(a):
    bins = {
        "engine": os.environ.get("TANDEM_ENGINE")
        or os.path.join(a.build_dir, "replica-engine", "service", "tandem-engine"),
        "tandemctl": os.environ.get("TANDEMCTL")
        or os.path.join(a.build_dir, "tools", "tandemctl", "tandemctl"),
        "ack_verifier": os.environ.get("ACK_VERIFIER")
        or os.path.join(a.build_dir, "tests", "ack_verifier"),
    }
    missing = [f"{k}={v}" for k, v in bins.items() if not os.access(v, os.X_OK)]
    return bins, missing


def fmt_faults(counter):
    return " ".join(f"{SHORT[k]}={counter[k]}" for k in KINDS if counter.get(k))


def print_table(results, out):
    cols = ["seed", "faults", "acked", "failed", "lost", "divergent", "fenced_acks", "rebuilds",
            "degraded_s", "secs", "result"]
    rows = []
    tot = collections.Counter()
    tot_faults = collections.Counter()
    for seed, st in results:
        tot_faults.update(st["faults"])
        for k in ("acked", "failed", "lost", "divergent", "fenced", "rebuilds"):
            tot[k] += st[k]
        tot["degraded_s"] += st["degraded_s"]
        tot["secs"] += st["seconds"]
        rows.append([str(seed), fmt_faults(st["faults"]), str(st["acked"]), str(st["failed"]),
                     str(st["lost"]), str(st["divergent"]), str(st["fenced"]), str(st["rebuilds"]),
                     f"{st['degraded_s']:.1f}", f"{st['seconds']:.0f}", st["result"][:70]])
    n_fail = sum(1 for _, st in results if st["result"] != "ok")
    rows.append(["total", fmt_faults(tot_faults), str(tot["acked"]), str(tot["failed"]),
                 str(tot["lost"]), str(tot["divergent"]), str(tot["fenced"]), str(tot["rebuilds"]),
                 f"{tot['degraded_s']:.1f}", f"{tot['secs']:.0f}",
                 "ok" if n_fail == 0 else f"{n_fail} of {len(results)} seeds FAILED"])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.ljust(widths[i]) if i in (0, 1, 10) else v.rjust(widths[i])
                               for i, v in enumerate(r)).rstrip()
    print(line(cols), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for r in rows[:-1]:
        print(line(r), file=out)
    print(line(["-" * w for w in widths]), file=out)
    print(line(rows[-1]), file=out)
    print(file=out)
    # Faults by kind: how many were injected, how many steps with that kind failed.
    failed_in = collections.defaultdict(list)
    for seed, st in results:
        for k in set(st.get("failed_kinds", [])):
            failed_in[k].append(seed)
    print("faults by kind    injected  failing steps (seeds)", file=out)
    for k in KINDS:
        seeds = failed_in.get(k, [])
        print(f"  {k:<14} {tot_faults.get(k, 0):>9}  "
              + (f"{len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "0"), file=out)
    print(f"  ({', '.join(f'{SHORT[k]}={k}' for k in KINDS)})", file=out)
    print("must be 0: lost (acknowledged writes lost or corrupt), divergent (HEALTHY replicas "
          "that differ), fenced_acks (writes acknowledged by a fenced-out target)", file=out)
    print("failed: writes the serving target failed (EIO etc.; not acknowledged, so either "
          "content is accepted); those a fenced-out target failed are not counted", file=out)
    return n_fail


def main(argv):
    a = parse_args(argv)
    bins, missing = find_binaries(a)
    if missing:
        print("fault_checker: missing binaries (build first: ./scripts/build.sh build/dev): "
              + ", ".join(missing), file=sys.stderr)
        return 77 if a.skip_if_missing else 2
    cfg = Config(a)

    def log(line):
        if not a.quiet:
            print(line, file=sys.stderr, flush=True)

    # SIGTERM (ctest's timeout) unwinds like Ctrl-C: every process is killed.
    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)

    in_sync = Ctl(bins["tandemctl"], a.in_sync).in_sync
    log(f"fault_checker: seeds {a.seed_list}, {a.faults_per_seed} faults each, kinds "
        f"{','.join(a.kinds)}"
        + ("; colocated: targets on replica engines (local channel)" if a.colocated else "")
        + "; target create "
        + ("passes the last in-sync set" if in_sync else "uses the quorum rule (no in-sync flags)"))
    results = []
    t0 = time.monotonic()
    try:
        for seed in a.seed_list:
            if time.monotonic() > cfg.global_deadline:
                print(f"fault_checker: --time-limit reached; seeds from {seed} on not run",
                      file=sys.stderr)
                results.append((seed, {"faults": collections.Counter(), "acked": 0, "failed": 0,
                                       "lost": 0, "divergent": 0, "fenced": 0, "rebuilds": 0,
                                       "degraded_s": 0.0, "seconds": 0.0, "notes": [],
                                       "result": "FAIL: not run (--time-limit)"}))
                continue
            st = SeedRun(seed, cfg, bins, log).execute()
            results.append((seed, st))
            if st["result"] != "ok":
                print(f"\nSEED {seed} FAILED: {st.get('failure', st['result'])}", file=sys.stderr)
                if st.get("kept"):
                    print(f"  run dir kept: {st['kept']}", file=sys.stderr)
                print(f"  reproduce:    {cfg.repro(seed)}\n", file=sys.stderr, flush=True)
                if a.stop_on_failure:
                    break
    except KeyboardInterrupt:
        print("fault_checker: interrupted", file=sys.stderr)
        if results:
            print_table(results, sys.stdout)
        return 130
    steps = sum(st.get("steps", 0) for _, st in results)
    mids = sum(st.get("mid_verifies", 0) for _, st in results)
    local = sum(st.get("local_opens", 0) for _, st in results)
    print(f"\nfault_checker: {len(results)} seeds, {steps} steps checked, {mids} mid-step "
          f"verifies, {time.monotonic() - t0:.0f} s"
          + (f", {local} targets with their local replica in-process" if a.colocated else ""),
          file=sys.stdout)
    n_fail = print_table(results, sys.stdout)
    failing = [(s, st) for s, st in results if st["result"] != "ok"]
    if failing:
        print("\nfailing seeds:", file=sys.stdout)
        for s, st in failing:
            print(f"  seed {s}: {st['result']}\n    kinds in the failing step: "
                  f"{', '.join(st.get('failed_kinds', [])) or '-'}\n    run dir: "
                  f"{st.get('kept', '-')}\n    reproduce: {cfg.repro(s)}", file=sys.stdout)
    notes = [(s, n) for s, st in results for n in st["notes"]]
    if notes:
        print("\nnotes (not failures):", file=sys.stdout)
        for s, n in notes:
            print(f"  seed {s}: {n}", file=sys.stdout)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
