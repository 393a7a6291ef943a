#!/usr/bin/env python3
"""Per-I/O timeline of QD1 writes (bench/qd1_profile.sh).

  qd1_timeline.py nbd TRACE ENGINE_TID FIO_TID   fio nbd -> tandem-engine loop
  qd1_timeline.py raw TRACE FIO_TID              fio io_uring on the file
  qd1_timeline.py stat STAT ENGINE_TID FIO_TID [REMOTE_TID...]
                                                 perf stat --per-thread, per I/O
  qd1_timeline.py repl TRACE FIO_TID E0_TID E1_TID [E2_TID...]
                                                 fio nbd -> the target's loop (e0) ->
                                                 remote replicas' loops and back

TRACE is `perf script -F comm,tid,cpu,time,event,trace` of sched_switch,
sched_wakeup, block_rq_issue/complete and raw_syscalls of the two threads
(bench/qd1_profile.sh). One I/O runs from fio's 28-byte request-header
sendto (nbd) or its io_uring_enter (raw) to fio's reply recvfrom (nbd) or the
io_uring_enter that reaped it (raw); each segment's p25/p50/p75/mean in
microseconds over all complete I/Os. STAT: the counters of each thread
divided by the engine's sendmsg count (one NBD reply per I/O; with remote
replicas' loop tids given, e0's sendmsg count / (1 + their number), one send
per remote replica). REPL: milestones of each I/O as offsets from fio's header
send, then the segments between them, each wake-up split by whether the waker
ran on the wakee's CPU (same) or on the other one (cross).
"""
import re
import statistics
import sys

LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s*(.*)$")


def parse(path):
    ev = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            comm, tid, cpu, t, name, rest = m.groups()
            ev.append((float(t) * 1e6, int(tid), int(cpu), name, rest, comm))
    return ev


def syscall(rest):
    m = re.match(r"NR (\d+)", rest)
    return int(m.group(1)) if m else -1


def ret(rest):
    m = re.search(r"= (-?\d+)", rest)
    return int(m.group(1)) if m else None


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(rows, names):
    print(f"{'segment':58s} {'p25':>7s} {'p50':>7s} {'p75':>7s} {'mean':>7s}")
    for i, n in enumerate(names):
        xs = [r[i] for r in rows if r[i] is not None]
        if not xs:
            continue
        print(f"{n:58s} {pct(xs, .25):7.1f} {pct(xs, .5):7.1f} {pct(xs, .75):7.1f} "
              f"{statistics.mean(xs):7.1f}")
    print(f"I/Os: {len(rows)}")


def nbd(path, etid, ftid):
    ev = parse(path)
    NAMES = [
        "1 client header sendto enter -> engine on CPU",
        "2 engine on CPU -> io_uring_enter (recv, split payload, target)",
        "  2a of which: payload arrived in a 2nd wake-up (1=yes)",
        "3 io_uring_enter (submit) syscall",
        "  3a enter -> block_rq_issue",
        "4 block_rq_issue -> block_rq_complete (disk)",
        "5 rq_complete -> engine on CPU (dio kworker, wake-up)",
        "6 engine on CPU -> reply sendmsg enter",
        "7 sendmsg syscall",
        "8 sendmsg exit -> client recv exit",
        "  total client send -> client recv",
        "  engine syscalls per I/O",
        "  engine epoll_wait per I/O",
        "  engine switch-ins per I/O",
    ]
    rows = []
    # Walk the stream with a small state machine keyed on the client's header send.
    cur = None
    for t, tid, cpu, name, rest, comm in ev:
        if tid == ftid and name == "raw_syscalls:sys_enter" and syscall(rest) == 44 and ", 1c," in rest:
            if cur is not None and cur.get("done"):
                rows.append(cur["row"])
            cur = {"send": t, "wakes": 0, "sys": 0, "epoll": 0, "sw": 0}
            continue
        if cur is None:
            continue
        if name == "sched:sched_switch" and f"next_pid={etid} " in rest:
            cur["sw"] += 1
            if "on" not in cur:
                cur["on"] = t
            elif "cmpl" in cur and "on2" not in cur:
                cur["on2"] = t
            elif "sub_in" not in cur:
                cur["wakes"] += 1
        elif tid == etid and name == "raw_syscalls:sys_enter":
            cur["sys"] += 1
            nr = syscall(rest)
            if nr == 232:
                cur["epoll"] += 1
            if nr == 426 and "sub_in" not in cur:
                cur["sub_in"] = t
            elif nr == 46 and "cmpl" in cur and "snd_in" not in cur:
                cur["snd_in"] = t
        elif tid == etid and name == "raw_syscalls:sys_exit":
            nr = syscall(rest)
            if nr == 426 and "sub_in" in cur and "sub_out" not in cur:
                cur["sub_out"] = t
            elif nr == 46 and "snd_in" in cur and "snd_out" not in cur:
                cur["snd_out"] = t
        elif name == "block:block_rq_issue" and comm.startswith("tandem") and "iss" not in cur:
            cur["iss"] = t
        elif name == "block:block_rq_complete" and "iss" in cur and "cmpl" not in cur:
            cur["cmpl"] = t
        elif (tid == ftid and name == "raw_syscalls:sys_exit" and syscall(rest) == 45
              and ret(rest) == 16 and "snd_out" in cur and "done" not in cur):
            c = cur
            need = ("on", "sub_in", "sub_out", "iss", "cmpl", "on2", "snd_in", "snd_out")
            if all(k in c for k in need):
                c["done"] = True
                c["row"] = [
                    c["on"] - c["send"],
                    c["sub_in"] - c["on"],
                    1 if c["wakes"] else 0,
                    c["sub_out"] - c["sub_in"],
                    c["iss"] - c["sub_in"],
                    c["cmpl"] - c["iss"],
                    c["on2"] - c["cmpl"],
                    c["snd_in"] - c["on2"],
                    c["snd_out"] - c["snd_in"],
                    t - c["snd_out"],
                    t - c["send"],
                    c["sys"],
                    c["epoll"],
                    c["sw"],
                ]
    if cur is not None and cur.get("done"):
        rows.append(cur["row"])
    report(rows, NAMES)


def raw(path, ftid):
    ev = parse(path)
    NAMES = [
        "1 io_uring_enter (submit) enter -> block_rq_issue",
        "2 block_rq_issue -> submit syscall exit",
        "3 block_rq_issue -> block_rq_complete (disk)",
        "4 rq_complete -> fio on CPU (dio kworker, wake-up)",
        "5 fio on CPU -> its io_uring_enter (wait) exit",
        "  total submit enter -> reap exit",
    ]
    rows = []
    cur = None
    for t, tid, cpu, name, rest, comm in ev:
        if tid == ftid and name == "raw_syscalls:sys_enter" and syscall(rest) == 426:
            if cur is None or "done" in cur:
                if cur is not None and "row" in cur:
                    rows.append(cur["row"])
                cur = {"in": t}
            continue
        if cur is None:
            continue
        if name == "block:block_rq_issue" and tid == ftid and "iss" not in cur:
            cur["iss"] = t
        elif tid == ftid and name == "raw_syscalls:sys_exit" and syscall(rest) == 426:
            if "iss" in cur and "out1" not in cur:
                cur["out1"] = t
            if "on" in cur:
                c = cur
                c["done"] = True
                if all(k in c for k in ("iss", "out1", "cmpl", "on")):
                    c["row"] = [c["iss"] - c["in"], c["out1"] - c["iss"], c["cmpl"] - c["iss"],
                                c["on"] - c["cmpl"], t - c["on"], t - c["in"]]
        elif name == "block:block_rq_complete" and "iss" in cur and "cmpl" not in cur:
            cur["cmpl"] = t
        elif name == "sched:sched_switch" and f"next_pid={ftid} " in rest and "cmpl" in cur \
                and "on" not in cur:
            cur["on"] = t
    if cur is not None and "row" in cur:
        rows.append(cur["row"])
    report(rows, NAMES)


def stat(path, etid, ftid, remotes=()):
    vals = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3 or "-" not in parts[0]:
                continue
            tid = parts[0].rsplit("-", 1)[1]
            if not tid.isdigit():
                continue
            try:
                v = float(parts[1].replace(",", ""))
            except ValueError:
                continue
            name = parts[3] if parts[2] == "msec" else parts[2]
            vals[(int(tid), name.replace("syscalls:sys_enter_", ""))] = v
    ios = vals.get((etid, "sendmsg"), 0) / (1 + len(remotes))
    if ios == 0:
        print("no sendmsg counted on the engine thread")
        return
    print(f"I/Os in the window: {ios:.0f}")
    names = sorted({n for (_, n) in vals})
    tids = [etid, ftid] + list(remotes)
    heads = ["engine loop", "fio"] + [f"e{i + 1} loop" for i in range(len(remotes))]
    print(f"{'counter':28s}" + "".join(f" {h:>12s}" for h in heads))
    for n in names:
        xs = [vals.get((t, n), 0) / ios for t in tids]
        unit = ""
        if n == "task-clock":
            xs, unit = [x * 1000 for x in xs], " (us of CPU)"
        print(f"{n + unit:28s}" + "".join(f" {x:12.2f}" for x in xs))


if __name__ == "__main__":
    if sys.argv[1] == "stat":
        stat(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), [int(a) for a in sys.argv[5:]])
    elif sys.argv[1] == "repl":
        from qd1_timeline_repl import repl
        repl(sys.argv[2], int(sys.argv[3]), [int(a) for a in sys.argv[4:]])
    elif sys.argv[1] == "nbd":
        nbd(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        raw(sys.argv[2], int(sys.argv[3]))
