#!/usr/bin/env python3
"""The target's per-stage latency over one benchmark job.

  stage_latency.py diff BEFORE AFTER LABEL REPLICAS JOB ROUND

BEFORE and AFTER are `tandemctl target get` outputs taken around the job; their
latency.<class>.<stage>.buckets= lines (engine.proto's StageLatency layout) are
subtracted, so the percentiles are the job's own. Prints one TSV row per stage
with requests in the interval:
  label replicas job round stage count p50_us p99_us mean_us
and, on stderr, one line per class for the log.

The bucket layout must match replica-engine/volume/stage_histogram.h: values
0..3 ns have a bucket each; bucket b >= 4 starts at (4 + b % 4) << (b // 4 - 1)
and ends where b + 1 starts; the last (139) is open. A percentile is the bucket
holding the value of rank ceil(q * count), interpolated by rank inside it, as
StageHistogram::Percentile does.
"""
import math
import sys

BUCKETS = 140
STAGES = ("queue", "replica", "data", "finish", "total")


def lower(b):
    if b < 4:
        return b
    return (4 + b % 4) << (b // 4 - 1)


def upper(b):
    return 2 * lower(BUCKETS - 1) if b >= BUCKETS - 1 else lower(b + 1)


def percentile(counts, q):
    n = sum(counts)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(q * n))
    below = 0
    for b, c in enumerate(counts):
        if c and below + c >= rank:
            lo = lower(b)
            return lo + (upper(b) - lo) * (rank - below - 0.5) / c
        below += c
    return float(lower(BUCKETS - 1))


def load(path):
    """stage -> (bucket counts, count, sum_ns) from a `target get` output."""
    out, summary = {}, {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            if not key.startswith("latency."):
                continue
            stage = key[len("latency."):]
            if stage.endswith(".buckets"):
                out[stage[: -len(".buckets")]] = [int(x) for x in value.split(",") if x]
            else:
                fields = dict(kv.split("=", 1) for kv in value.split())
                count = int(fields.get("count", 0))
                summary[stage] = (count, float(fields.get("mean_us", 0)) * count)
    return {s: (out.get(s, []), *summary.get(s, (0, 0.0))) for s in set(out) | set(summary)}


def diff(before_path, after_path, label, replicas, job, rnd):
    before, after = load(before_path), load(after_path)
    logs = {}
    for stage in sorted(after):
        a, a_n, a_sum = after[stage]
        b, b_n, b_sum = before.get(stage, ([], 0, 0.0))
        counts = [x - (b[i] if i < len(b) else 0) for i, x in enumerate(a)]
        n = sum(counts)
        if n <= 0:
            continue
        mean = (a_sum - b_sum) / max(a_n - b_n, 1)
        p50, p99 = percentile(counts, 0.5) / 1e3, percentile(counts, 0.99) / 1e3
        print(f"{label}\t{replicas}\t{job}\t{rnd}\t{stage}\t{n}\t{p50:.1f}\t{p99:.1f}\t{mean:.1f}")
        cls, _, name = stage.partition(".")
        logs.setdefault(cls, {})[name] = (p50, p99)
    for cls, stages in logs.items():
        parts = [f"{s} {stages[s][0]:.1f}/{stages[s][1]:.1f}" for s in STAGES if s in stages]
        print(f"  target {cls} stages p50/p99 us: " + ", ".join(parts), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 8 or sys.argv[1] != "diff":
        sys.exit(__doc__)
    diff(*sys.argv[2:8])
