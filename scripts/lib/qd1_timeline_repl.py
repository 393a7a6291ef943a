"""Per-I/O timeline of a QD1 write through remote replicas (qd1_timeline.py repl).

One I/O runs from fio's 28-byte NBD request-header sendto to fio's 16-byte
reply recvfrom. Inside it, by thread: e0 (the target's loop, which also
submits the in-process local replica's write) wakes, sends the WRITE to each
remote replica (sendmsg), submits its local write (io_uring_enter); each
remote loop wakes, receives (recvfrom/readv), submits (io_uring_enter), the
disk runs (block_rq_issue -> block_rq_complete, matched by sector), the loop
wakes again and replies (writev); e0 wakes on the replies and answers fio
(its last sendmsg). Each milestone keeps its time and CPU; a wake-up is
"cross" when the waker's CPU (sched_wakeup's) is not the CPU the wakee is
switched in on.
"""
import re

from qd1_timeline import parse, pct, ret, syscall

SECTOR = re.compile(r"(\d+) \+ (\d+)")
SENDTO, RECVFROM, SENDMSG, READV, WRITEV, URING = 44, 45, 46, 19, 20, 426


def windows(ev, ftid):
    """Yields the events of each complete I/O (header send .. reply recv)."""
    cur = None
    for e in ev:
        t, tid, cpu, name, rest, comm = e
        if tid == ftid and name == "raw_syscalls:sys_enter" and syscall(rest) == SENDTO \
                and ", 1c," in rest:
            cur = [e]
            continue
        if cur is None:
            continue
        cur.append(e)
        if tid == ftid and name == "raw_syscalls:sys_exit" and syscall(rest) == RECVFROM \
                and ret(rest) == 16:
            yield cur
            cur = None


def first(evs, after, pred):
    for e in evs:
        if e[0] >= after and pred(e):
            return e
    return None


def milestones(w, ftid, e0, remotes):
    """Dict name -> (time offset from fio's send, cpu), and wake flags."""
    t0 = w[0][0]
    m = {"fio send": (0.0, w[0][2])}
    switch_in = lambda tid: lambda e: e[3] == "sched:sched_switch" and f"next_pid={tid} " in e[4]
    enter = lambda tid, nrs: lambda e: (e[1] == tid and e[3] == "raw_syscalls:sys_enter"
                                        and syscall(e[4]) in nrs)
    leave = lambda tid, nrs: lambda e: (e[1] == tid and e[3] == "raw_syscalls:sys_exit"
                                        and syscall(e[4]) in nrs and (ret(e[4]) or 0) > 0)
    wake_of = lambda tid: lambda e: e[3] == "sched:sched_wakeup" and f"pid={tid} " in e[4]

    def put(name, e):
        if e is not None:
            m[name] = (e[0] - t0, e[2])
        return e

    def woke(name, tid, after, before, wake_after=None):
        """The wake-up of tid after `after` and its switch-in, if that came
        before `before` (else the thread was still on CPU); cross = the waker
        ran on the other CPU."""
        wk = first(w, after if wake_after is None else wake_after, wake_of(tid))
        on = first(w, after, switch_in(tid))
        if on is not None and on[0] <= before:
            put(name, on)
            if wk is not None and wk[0] <= on[0]:
                m[name + " cross"] = (1.0 if wk[2] != on[2] else 0.0, on[2])
        return on

    sends = [e for e in w if enter(e0, {SENDMSG})(e)]
    rx0 = first(w, w[0][0], leave(e0, {RECVFROM}))
    if len(sends) < 1 + len(remotes) or rx0 is None:
        return None
    put("e0 recv", rx0)
    woke("e0 on CPU", e0, w[0][0], rx0[0])
    m["e0 off CPU between replica sends"] = (
        1.0 if any(e[3] == "sched:sched_switch" and f"prev_pid={e0} " in e[4]
                   for e in w if sends[0][0] <= e[0] <= sends[len(remotes) - 1][0]) else 0.0, 0)
    put("e0 1st replica sendmsg", sends[0])
    put("e0 last replica sendmsg", sends[len(remotes) - 1])
    put("e0 local io_uring_enter", first(w, w[0][0], enter(e0, {URING})))
    put("e0 NBD reply sendmsg", sends[-1])
    issues = {}
    for e in w:
        if e[3] == "block:block_rq_issue":
            s = SECTOR.search(e[4])
            if s:
                issues.setdefault(e[1], (e, s.group(0)))
    done = lambda sec: lambda e: e[3] == "block:block_rq_complete" and sec in e[4]
    for tid, label in [(e0, "e0")] + [(r, f"e{i + 1}") for i, r in enumerate(remotes)]:
        if tid in issues:
            put(f"{label} disk issue", issues[tid][0])
            put(f"{label} disk complete", first(w, issues[tid][0][0], done(issues[tid][1])))
        if tid == e0:
            continue
        rx = put(f"{label} recv", first(w, sends[0][0], leave(tid, {RECVFROM, READV})))
        if rx is None:
            return None
        woke(f"{label} on CPU", tid, sends[0][0], rx[0])
        put(f"{label} io_uring_enter", first(w, rx[0], enter(tid, {URING})))
        rep = put(f"{label} reply writev", first(w, rx[0], enter(tid, {WRITEV, SENDMSG})))
        if rep is not None and f"{label} disk complete" in m:
            woke(f"{label} on CPU after disk", tid, t0 + m[f"{label} disk complete"][0], rep[0])
        if rep is not None:
            put(f"{label} reply writev exit", first(w, rep[0], leave(tid, {WRITEV, SENDMSG})))
    outs = [(m[f"e{i + 1} reply writev exit"][0], m[f"e{i + 1} reply writev"][0])
            for i in range(len(remotes)) if f"e{i + 1} reply writev exit" in m]
    if len(outs) == len(remotes):
        last = max(outs)
        m["last remote reply out"] = (last[0], 0)
        woke("e0 on CPU after last reply", e0, t0 + last[0], sends[-1][0], t0 + last[1])
    m["fio recv done"] = (w[-1][0] - t0, w[-1][2])
    return m


def seg(ms, a, b, cross=None):
    xs = [m[b][0] - m[a][0] for m in ms if a in m and b in m]
    out = [xs]
    if cross:
        for v in (0.0, 1.0):
            out.append([m[b][0] - m[a][0] for m in ms
                        if a in m and b in m and m.get(cross, (-1,))[0] == v])
    return out


def repl(path, ftid, etids):
    e0, remotes = etids[0], etids[1:]
    ms = [m for m in (milestones(w, ftid, e0, remotes) for w in windows(parse(path), ftid)) if m]
    print(f"I/Os: {len(ms)}")
    if not ms:
        return
    names = []
    for m in ms:
        names += [n for n in m if n not in names and not n.endswith(" cross")
                  and n != "e0 off CPU between replica sends"]
    print(f"{'milestone (offset from fio header send, us)':46s} {'p50':>7s} {'n':>5s} "
          f"{'cpu0 %':>6s} {'cross %':>7s}")
    for n in sorted(names, key=lambda n: pct([m[n][0] for m in ms if n in m], .5)):
        xs = [m[n] for m in ms if n in m]
        cr = [m[n + " cross"][0] for m in ms if n + " cross" in m]
        crs = f"{100 * sum(cr) / len(cr):7.0f}" if cr else f"{'':7s}"
        print(f"{n:46s} {pct([x[0] for x in xs], .5):7.1f} {len(xs):5d} "
              f"{100 * sum(1 for x in xs if x[1] == 0) / len(xs):6.0f} {crs}")
    off = [m["e0 off CPU between replica sends"][0] for m in ms]
    print(f"e0 switched out between its replica sends in {100 * sum(off) / len(off):.0f}% of I/Os")
    segs = [("fio send", "e0 on CPU", "e0 on CPU cross"),
            ("fio send", "e0 recv", None),
            ("e0 recv", "e0 local io_uring_enter", None),
            ("e0 local io_uring_enter", "e0 1st replica sendmsg", None),
            ("e0 1st replica sendmsg", "e0 last replica sendmsg", None),
            ("e0 local io_uring_enter", "e0 disk issue", None),
            ("e0 disk issue", "e0 disk complete", None)]
    for i in range(len(remotes)):
        r = f"e{i + 1}"
        segs += [("e0 1st replica sendmsg", f"{r} on CPU", f"{r} on CPU cross"),
                 ("e0 1st replica sendmsg", f"{r} recv", None),
                 (f"{r} recv", f"{r} io_uring_enter", None),
                 (f"{r} io_uring_enter", f"{r} disk issue", None),
                 (f"{r} disk issue", f"{r} disk complete", None),
                 (f"{r} disk complete", f"{r} on CPU after disk", f"{r} on CPU after disk cross"),
                 (f"{r} on CPU after disk", f"{r} reply writev", None),
                 (f"{r} reply writev", f"{r} reply writev exit", None)]
    segs += [("last remote reply out", "e0 on CPU after last reply",
              "e0 on CPU after last reply cross"),
             ("last remote reply out", "e0 NBD reply sendmsg", None),
             ("e0 NBD reply sendmsg", "fio recv done", None),
             ("fio send", "fio recv done", None)]
    print(f"\n{'segment (us)':62s} {'p25':>6s} {'p50':>6s} {'p75':>6s} {'n':>5s} "
          f"{'p50 same':>8s} {'p50 cross':>9s} {'cross%':>6s}")
    for a, b, cross in segs:
        parts = seg(ms, a, b, cross)
        xs = parts[0]
        if not xs:
            continue
        line = f"{a + ' -> ' + b:62s} {pct(xs, .25):6.1f} {pct(xs, .5):6.1f} {pct(xs, .75):6.1f} " \
               f"{len(xs):5d}"
        if cross:
            same, cr = parts[1], parts[2]
            line += f" {pct(same, .5) if same else float('nan'):8.1f}"
            line += f" {pct(cr, .5) if cr else float('nan'):9.1f}"
            line += f" {100 * len(cr) / max(1, len(same) + len(cr)):6.0f}"
        print(line)
