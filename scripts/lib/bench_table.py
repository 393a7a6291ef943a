#!/usr/bin/env python3
"""Prints the NBD benchmark table from the TSV written by scripts/lib/nbd_bench.sh.

Rows: label replicas job iops p50_us p99_us ios cpu_us_per_io. The "raw" rows
(replicas 0) are the baseline; every other row gets its ratio to raw, and write
rows also the ratio to raw / replicas (what N-way mirroring on one disk can
reach at best). Then the issue's targets, each as measured / wanted.
"""
import sys


def main(path):
    rows = []
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 8:
                continue
            rows.append(dict(label=p[0], n=int(p[1]), job=p[2], iops=float(p[3]),
                             p50=float(p[4]), p99=float(p[5]), ios=int(p[6]), cpu=float(p[7])))
    raw = {r["job"]: r for r in rows if r["n"] == 0}
    hdr = (f"{'config':<10} {'job':<18} {'IOPS':>9} {'MB/s':>8} {'p50 us':>8} {'p99 us':>9} "
           f"{'CPU us/IO':>9} {'x raw':>6} {'x raw/N':>7}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        bs = 1 << 20 if "-1m-" in r["job"] else 4096
        base = raw.get(r["job"])
        x_raw = x_raw_n = ""
        if base and r["n"] > 0 and base["iops"] > 0:
            x_raw = f"{r['iops'] / base['iops']:.2f}"
            if "write" in r["job"]:
                x_raw_n = f"{r['iops'] / (base['iops'] / r['n']):.2f}"
        print(f"{r['label']:<10} {r['job']:<18} {r['iops']:>9.0f} {r['iops'] * bs / 1e6:>8.1f} "
              f"{r['p50']:>8.1f} {r['p99']:>9.1f} {r['cpu']:>9.1f} {x_raw:>6} {x_raw_n:>7}")

    def get(n, job):
        for r in rows:
            if r["n"] == n and r["job"] == job:
                return r
        return None

    print()
    checks = []
    r3, b = get(3, "randwrite-4k-qd32"), raw.get("randwrite-4k-qd32")
    if r3 and b:
        v = r3["iops"] / (b["iops"] / 3)
        checks.append(("3 replicas 4K randwrite QD32 vs raw/3", f"{v:.2f}x", ">= 0.80x", v >= 0.8))
    r3, b = get(3, "randwrite-4k-qd1"), raw.get("randwrite-4k-qd1")
    if r3 and b:
        d = r3["p50"] - b["p50"]
        checks.append(("3 replicas 4K randwrite QD1 p50 - raw p50", f"{d:.1f} us",
                       "<= 1 loopback RTT + 30 us", None))
    r3, b = get(3, "randread-4k-qd32"), raw.get("randread-4k-qd32")
    if r3 and b:
        v = r3["iops"] / b["iops"]
        checks.append(("3 replicas 4K randread QD32 vs raw", f"{v:.2f}x", ">= 0.70x", v >= 0.7))
    for name, got, want, ok in checks:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        print(f"target: {name}: {got} (want {want}) {verdict}")


if __name__ == "__main__":
    main(sys.argv[1])
