#!/usr/bin/env python3
"""Probe MQAR settings for `gdn demo` in parallel: one single-threaded run per (setting, mixer).

The demo must separate the delta rule (Gated DeltaNet, DeltaNet >= 95%) from linear attention
(<= 50%) within its time budget on a 2-core machine. This runs many candidate settings side by
side on a many-core machine and records accuracy and seconds per run, so that the chosen
defaults rest on measurements. Each probe is `gdn demo --mixers M --seeds 1 --jobs 1 --threads 1 --json`
with the setting's flags.

  bench/train/demo_probes.py --probes FILE.json [--gdn build/gdn] [--jobs N] [--out FILE]

FILE.json: {"settings": [{"name": ..., "flags": {"vocab": 256, ...}, "mixers": [...]}, ...]}
"""
import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweeplib as sl  # noqa: E402


def run_probe(gdn, setting, mixer, workdir, timeout):
    cmd = [gdn, "demo", "--mixers", mixer, "--seeds", "1", "--jobs", "1", "--threads", "1", "--json", "--out", workdir]
    for key, value in setting["flags"].items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        else:
            cmd += [flag, str(value)]
    start = time.time()
    row = {"setting": setting["name"], "flags": setting["flags"], "mixer": mixer, "command": " ".join(cmd[1:])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        row["seconds"] = round(time.time() - start, 1)
        row["error"] = "timed out after %d s" % timeout
        return row
    row["seconds"] = round(time.time() - start, 1)
    summary = sl.last_json_line(proc.stdout)
    if proc.returncode != 0 or summary is None:
        row["error"] = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        return row
    row["accuracy"] = summary["accuracy"][mixer]
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", required=True, help="JSON file of settings to probe")
    ap.add_argument("--gdn", default="build/gdn", help="gdn binary")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="runs in parallel")
    ap.add_argument("--out", default="demo_probes.json", help="results JSON")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds after which a run is stopped and recorded as such")
    args = ap.parse_args()
    settings = json.load(open(args.probes))["settings"]
    runs = [(s, m) for s in settings for m in s["mixers"]]
    env_note = "one thread per run, %d runs at a time on %d cores" % (args.jobs, os.cpu_count())
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp, cf.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_probe, args.gdn, s, m, os.path.join(tmp, "run%d" % i), args.timeout)
                   for i, (s, m) in enumerate(runs)]
        for fut in cf.as_completed(futures):
            row = fut.result()
            rows.append(row)
            shown = row.get("accuracy", row.get("error"))
            print("[%d/%d %.0fs] %s %s: %s (%.0fs)" % (len(rows), len(runs), time.time() - start, row["setting"],
                                                     row["mixer"], shown, row["seconds"]), file=sys.stderr, flush=True)
    rows.sort(key=lambda r: (r["setting"], r["mixer"]))
    result = {"what": "gdn demo probes (bench/train/demo_probes.py)", "machine": sl.machine(), "conditions": env_note,
              "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
