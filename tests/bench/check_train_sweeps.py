#!/usr/bin/env python3
"""Runs one bench/train sweep in its --smoke mode with an extra run that must fail (an unknown
mixer), then checks that the JSON, markdown and SVG it writes are well-formed, that every
planned run has a row, and that the failed run is recorded as failed, not dropped.

Usage: check_train_sweeps.py --gdn PATH --script {mqar_grid,mad_table,niah,lm_report}
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOGUS = "no_such_mixer"


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def run_script(script, gdn, out, extra):
    cmd = [sys.executable, os.path.join(REPO, "bench", "train", script + ".py"), "--gdn", gdn, "--jobs", "2",
           "--out", out, "--smoke"] + extra
    print(" ".join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    sys.stderr.write(p.stderr[-3000:])
    check(p.returncode == 0, f"{script} exited with {p.returncode}")


def one(out, pattern):
    found = glob.glob(os.path.join(out, pattern))
    check(len(found) == 1, f"expected one file {pattern} in {out}, found {found}")
    return found[0]


def check_common(out, stem):
    data = json.load(open(one(out, f"*-{stem}-smoke.json")))
    for key in ("machine", "budget", "runs"):
        check(key in data, f"{stem} JSON has no '{key}'")
    for key in ("cpu", "cores", "date"):
        check(key in data["machine"], f"machine has no '{key}'")
    rows = data["runs"]
    check(rows, "no runs recorded")
    for r in rows:
        check(r.get("status") in ("ok", "failed", "timeout", "skipped"), f"bad status in {r}")
        if r["status"] == "ok":
            for key in ("eval_loss", "seconds"):
                check(isinstance(r.get(key), (int, float)), f"ok run without numeric {key}: {r.get('run')}")
    md = open(one(out, f"*-{stem}-smoke.md")).read()
    check(md.startswith("# ") and "|" in md, "markdown has no title or table")
    return data, md


def check_svgs(out, stem):
    svgs = glob.glob(os.path.join(out, f"*-{stem}-smoke*.svg"))
    check(svgs, f"no SVG for {stem}")
    for path in svgs:
        root = ET.parse(path).getroot()
        check(root.tag.endswith("svg"), f"{path} is not an SVG")
        check(len(list(root.iter())) > 10, f"{path} draws almost nothing")


def expect_failed_bogus(data, md):
    bogus = [r for r in data["runs"] if r.get("mixer") == BOGUS]
    check(bogus, "the run with an unknown mixer was dropped")
    check(all(r["status"] == "failed" and r.get("error") for r in bogus), "the unknown mixer's run is not 'failed'")
    check(any(r["status"] == "ok" for r in data["runs"]), "no run succeeded")
    check(BOGUS in md and "fail" in md, "the markdown does not show the failed run")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gdn", required=True)
    p.add_argument("--script", required=True, choices=["mqar_grid", "mad_table", "niah", "lm_report"])
    a = p.parse_args()
    gdn = os.path.abspath(a.gdn)
    with tempfile.TemporaryDirectory(prefix="check-sweep-") as out:
        if a.script == "mqar_grid":
            run_script("mqar_grid", gdn, out, ["--mixers", f"gated_deltanet,{BOGUS}"])
            data, md = check_common(out, "mqar-grid")
            expect_failed_bogus(data, md)
            check(len(data["runs"]) == 2 * len(data["grid"]) * len(data["d_models"]) * len(data["budget"]["lrs"]),
                  "not one row per planned run")
            check(data["best"], "no best-lr rows")
            check_svgs(out, "mqar-grid")
            # Zoology's protocol: one run per mixer on the mixture, scored on every grid point.
            mix = os.path.join(out, "mix")
            run_script("mqar_grid", gdn, mix, ["--train-mix", "--mixers", f"gated_deltanet,{BOGUS}"])
            data, md = check_common(mix, "mqar-grid")
            expect_failed_bogus(data, md)
            check(len(data["runs"]) == 2 * len(data["d_models"]) * len(data["budget"]["lrs"]),
                  "--train-mix: not one row per (mixer, d_model, lr)")
            ok = [r for r in data["runs"] if r["status"] == "ok"]
            check(ok and all(len(r["cells"]) == len(data["grid"]) for r in ok), "--train-mix: a point not scored")
            check(all(c["status"] == "ok" and 0 <= c["eval_accuracy"] <= 1 for r in ok for c in r["cells"]),
                  "--train-mix: an evaluation failed")
            check(len(data["best"]) == 2 * len(data["grid"]) * len(data["d_models"]),
                  "--train-mix: not one best row per (mixer, point, d_model)")
        elif a.script == "mad_table":
            run_script("mad_table", gdn, out, ["--mixers", f"gated_deltanet,{BOGUS}"])
            data, md = check_common(out, "mad-table")
            expect_failed_bogus(data, md)
            check("published" in data and data["published"]["rows"], "no published numbers")
            check("compression" in md, "the table does not mention compression")
            # Compression trains with the autoencoder head and is scored on every position.
            comp = [r for r in data["runs"] if r.get("task") == "mad_compression" and r.get("mixer") == "gated_deltanet"]
            check(comp and all(r["status"] == "ok" for r in comp), "the compression run did not finish")
            check(all(r["model"]["head"] == "autoencoder" for r in comp), "compression did not use the autoencoder")
            check(all(r["eval_count"] == 32 * 32 for r in comp), "compression is not scored on all 32 positions")
            # --merge joins result files into one table without training.
            sweep = one(out, "*-mad-table-smoke.json")
            run_script("mad_table", gdn, out, ["--merge", sweep, sweep, "--tag", "merged"])
            merged = json.load(open(one(out, "*-mad-table-merged-smoke.json")))
            check(len(merged["merged_from"]) == 2, "merged_from does not name both files")
            check(len(merged["runs"]) == 2 * len(data["runs"]), "the merged file does not hold every run")
            check(merged["tasks"] == data["tasks"], "merged tasks differ from the sweep's")
            check("Merged from" in open(one(out, "*-mad-table-merged-smoke.md")).read(), "markdown names no sources")
        elif a.script == "niah":
            run_script("niah", gdn, out, ["--mixers", f"gated_deltanet,{BOGUS}"])
            data, md = check_common(out, "niah")
            expect_failed_bogus(data, md)
            check(data.get("cells"), "no length x depth cells")
            check_svgs(out, "niah")
        else:
            run_script("lm_report", gdn, out, ["--mixers", f"gated_deltanet,{BOGUS}"])
            data, md = check_common(out, "lm-report")
            expect_failed_bogus(data, md)
            ok = [r for r in data["runs"] if r["status"] == "ok"]
            for r in ok:
                for key in ("bits_per_byte", "perplexity", "samples"):
                    check(key in r, f"lm run without {key}")
    print(f"{a.script}: outputs well-formed, failed run recorded", file=sys.stderr)


if __name__ == "__main__":
    main()
