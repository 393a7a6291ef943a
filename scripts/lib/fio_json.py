#!/usr/bin/env python3
"""Reads fio --output-format=json files (fio may print lines before the JSON).

  fio_json.py check FILE...   prints one line per job; exits 1 if any job had an
                              error, a verify error or did no I/O
  fio_json.py stats FILE      prints "iops p50_us p99_us ios cpu_s runtime_s" of
                              the job's main direction (for the benchmark)
  fio_json.py lat FILE        prints the main direction's "lat" p50 in us
                              (slat + clat; needs fio --lat_percentiles=1,
                              else 0): raw io_uring counts its submit, which
                              holds the filesystem's write path, in slat,
                              while over NBD the engine's submit is in clat
"""
import json
import sys


def load(path):
    with open(path) as f:
        text = f.read()
    start = text.find("{")
    if start < 0:
        raise SystemExit(f"fio_json: no JSON in {path}:\n{text[:2000]}")
    return json.loads(text[start:])


def main_dir(job):
    w, r = job["write"], job["read"]
    # A write job with do_verify also reads; it is still a write job.
    return "write" if w["total_ios"] > 0 else "read"


def pct(d, key, kind="clat_ns"):
    p = d.get(kind, {}).get("percentile", {})
    return p.get(key, 0.0) / 1000.0


def check(paths):
    bad = False
    for path in paths:
        for job in load(path)["jobs"]:
            w, r = job["write"], job["read"]
            print(f"fio {job['jobname']}: error={job['error']} writes={w['total_ios']} "
                  f"reads={r['total_ios']} total_err={job.get('total_err', 0)}")
            if job["error"] != 0 or job.get("total_err", 0) != 0 or \
                    (w["total_ios"] + r["total_ios"]) == 0:
                bad = True
    return 1 if bad else 0


def stats(path):
    job = load(path)["jobs"][0]
    d = job[main_dir(job)]
    runtime_s = job.get("job_runtime", d.get("runtime", 0)) / 1000.0
    cpu_s = (job.get("usr_cpu", 0.0) + job.get("sys_cpu", 0.0)) / 100.0 * runtime_s
    print(f"{d['iops']:.1f} {pct(d, '50.000000'):.1f} {pct(d, '99.000000'):.1f} "
          f"{d['total_ios']} {cpu_s:.4f} {runtime_s:.3f}")
    return 0


def lat(path):
    job = load(path)["jobs"][0]
    print(f"{pct(job[main_dir(job)], '50.000000', 'lat_ns'):.1f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        sys.exit(check(sys.argv[2:]))
    if len(sys.argv) == 3 and sys.argv[1] == "stats":
        sys.exit(stats(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "lat":
        sys.exit(lat(sys.argv[2]))
    sys.exit(__doc__)
