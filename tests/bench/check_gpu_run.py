#!/usr/bin/env python3
"""Runs bench/gpu/run.sh without a GPU, its tools replaced by stand-ins (gdn_gpu_check and
compute-sanitizer that pass, a gdn_gpu_bench that writes one row, an FLA folder whose `torch`
either hangs on import or fails), and checks what a user is left with:
  - FLA stopped by --fla-timeout: run.sh passes, and the report has gdn's rows, no FLA figures
    and a note that says FLA was stopped;
  - FLA failing: run.sh fails naming fla, and still writes gdn's report;
and report.py's KDA table (fla_bench.py --kda): FLA's chunk_kda rows merged by shape, an FLA error
shown as one.

Usage: check_gpu_run.py
"""
import glob
import json
import os
import stat
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GDN_JSON = {"gpu": "Stand-in GPU", "gdn_commit": "test", "copy_bandwidth_bytes_per_s": 3e12,
            "rows": [{"B": 8, "T": 2048, "H": 16, "HV": 16, "D": 128, "fwd_ms": 0.4, "fwdbwd_ms": 1.2,
                      "fwd_infer_ms": 0.2}],
            "decode": [{"seqs": 1, "decode_us": 6.8, "decode_bw_fraction": 0.2}]}


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def run(tmp, torch_init, extra):
    """run.sh with the stand-ins; FLA's torch package is torch_init. Returns (rc, output, report)."""
    bin_dir, tools, fla, res = (os.path.join(tmp, d) for d in ("bin", "tools", "fla", "res"))
    for d in (bin_dir, tools, os.path.join(fla, "torch"), res):
        os.makedirs(d, exist_ok=True)
    script(os.path.join(bin_dir, "gdn_gpu_check"), "exit 0")
    script(os.path.join(bin_dir, "gdn_gpu_bench"), f"cat > \"$1\" <<'EOF'\n{json.dumps(GDN_JSON)}\nEOF")
    script(os.path.join(tools, "compute-sanitizer"), "exit 0")
    script(os.path.join(tools, "nvidia-smi"), "echo Stand-in GPU")
    with open(os.path.join(fla, "torch", "__init__.py"), "w") as f:
        f.write(torch_init)
    env = dict(os.environ, PATH=tools + os.pathsep + os.environ["PATH"])
    p = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu", "run.sh"), "--fla", fla, "--bin", bin_dir,
                        "--results", res] + extra, env=env, capture_output=True, text=True, timeout=60)
    reports = glob.glob(os.path.join(res, "*.json"))
    check(len(reports) == 1, f"one report JSON expected, found {reports}\n{p.stdout}\n{p.stderr}")
    return p.returncode, p.stdout + p.stderr, json.load(open(reports[0]))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        rc, out, rep = run(tmp, "import time\ntime.sleep(60)\n", ["--fla-timeout", "2"])
        check(rc == 0, f"a stopped FLA is not a failure (rc {rc}):\n{out}")
        check("stopped at 2 s" in rep["note"], f"the note says FLA was stopped: {rep['note']!r}")
        check(rep["rows"][0]["fwd_infer_ms"] == 0.2, "gdn's row is reported")
        check(not any(k.startswith("fla_") for k in rep["rows"][0]), "no FLA figure where FLA did not run")
    with tempfile.TemporaryDirectory() as tmp:
        rc, out, rep = run(tmp, "raise ImportError('no torch in this stand-in')\n", [])
        check(rc != 0 and "FAILED: fla" in out, f"a failing FLA fails run.sh (rc {rc}):\n{out}")
        check(rep["rows"][0]["fwdbwd_ms"] == 1.2, "gdn's report is still written")
    with tempfile.TemporaryDirectory() as tmp:
        gdn = dict(GDN_JSON, rows=[dict(GDN_JSON["rows"][0], kda_fwd_infer_ms=1.2, kda_fwd_ms=1.25, kda_fwdbwd_ms=6.0)])
        fla = {"rows": [], "decode": [], "kda": [{"B": 8, "T": 2048, "H": 16, "HV": 16, "D": 128, "fla_kda_fwd_ms": 2.4,
                                                  "fla_kda_fwdbwd_error": "RuntimeError('refused')"}]}
        paths = [os.path.join(tmp, n) for n in ("gdn.json", "fla.json")]
        for path, data in zip(paths, (gdn, fla)):
            json.dump(data, open(path, "w"))
        p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu", "report.py"), *paths, tmp, "note"],
                           capture_output=True, text=True, timeout=60)
        check(p.returncode == 0, f"report.py failed:\n{p.stdout}\n{p.stderr}")
        md = open(glob.glob(os.path.join(tmp, "*.md"))[0]).read()
        want = "| 8×2048×16 (16) ×128 | 1.200 | 2.400 | 2.00× | 1.250 | 6.000 | error | — |"
        check(want in md, f"the KDA row {want!r} in:\n{md}")
    print("check_gpu_run: ok")


if __name__ == "__main__":
    main()
