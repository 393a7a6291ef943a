#!/usr/bin/env python3
"""Prints the rebuild benchmark's table from the KEY=VALUE file bench/rebuild_bench.sh writes.

Rates are bytes copied (rebuild.bytes_copied, or the file size for the raw
copy) over the wall time from `target add-replica` (or the engine restart) to
HEALTHY, in MB/s (10^6 bytes). Every ratio is computed from this run's numbers.
"""
import sys


def main(path):
    v = {}
    with open(path) as f:
        for line in f:
            k, _, val = line.strip().partition("=")
            if k:
                v[k] = val

    def num(k):
        return float(v[k])

    def mbs(nbytes, ns):
        return nbytes / (ns / 1e9) / 1e6

    raw = mbs(num("raw_bytes"), num("raw_ns"))
    rows = []  # (measurement, value, compared with, ratio, target, verdict)
    rows.append(("raw sequential copy (dd 1M O_DIRECT)", f"{raw:.0f} MB/s", "", "", "", ""))
    for name, label in (("full_idle", "full rebuild, idle"),
                        ("full_load", "full rebuild, under the load")):
        r = mbs(num(f"{name}_copied"), num(f"{name}_ns"))
        rows.append((f"{label} ({num(name + '_copied') / 2**30:.2f} GiB, "
                     f"{num(name + '_ns') / 1e9:.1f} s)", f"{r:.0f} MB/s", "raw copy",
                     f"{r / raw:.2f}", "", ""))
    for key, base_key, label, want in (
            ("load_full_iops", "base_full_iops", "unthrottled", ""),
            ("load_throttled_iops", "base_throttled_iops", "throttled", ">= 0.70")):
        base = num(base_key)
        rows.append((f"load: 4K randwrite QD16, no rebuild (before the {label} one)",
                     f"{base:.0f} IOPS", "", "", "", ""))
        if label == "throttled":
            limit = num("rate_limit")
            tr = num("throttled_copied") / (num("throttled_ns") / 1e9)
            dev = tr / limit
            rows.append((f"throttled rebuild under the load, limit {limit / 1e6:.1f} MB/s "
                         f"({num('throttled_ns') / 1e9:.1f} s)", f"{tr / 1e6:.1f} MB/s", "limit",
                         f"{dev:.2f}", "0.90-1.10", "met" if 0.9 <= dev <= 1.1 else "MISSED"))
        load = num(key)
        ok = "" if not want else ("met" if load / base >= 0.7 else "MISSED")
        rows.append((f"load during the {label} rebuild", f"{load:.0f} IOPS", "no rebuild",
                     f"{load / base:.2f}", want, ok))
    ic, iw = num("incremental_copied"), num("degraded_written")
    rows.append((f"incremental ({v.get('incremental_mode', '?')}, "
                 f"{num('incremental_ns') / 1e9:.1f} s to HEALTHY): copied vs written degraded",
                 f"{ic / 2**20:.1f} / {iw / 2**20:.1f} MiB", "written",
                 f"{ic / iw:.2f}", "<= 1.10", "met" if ic / iw <= 1.1 else "MISSED"))

    w = [max(len(r[i]) for r in rows) for i in range(6)]
    hdr = ("measurement", "value", "vs", "ratio", "target", "")
    w = [max(w[i], len(hdr[i])) for i in range(6)]
    line = lambda r: "  ".join(r[i].ljust(w[i]) if i in (0, 2, 4, 5) else r[i].rjust(w[i])
                               for i in range(6)).rstrip()
    print(line(hdr))
    print("-" * len(line(hdr)))
    for r in rows:
        print(line(r))


if __name__ == "__main__":
    main(sys.argv[1])
