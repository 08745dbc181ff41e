"""Merges gdn_gpu_bench's and fla_bench.py's JSON (same machine, same run.sh run) into
bench/results/<date>-<gpu>.json and a markdown table beside it.

    python3 bench/gpu/report.py gdn.json fla.json RESULTS_DIR [NOTE]
"""
import datetime
import json
import os
import re
import sys


def main():
    gdn_path, fla_path, results = sys.argv[1:4]
    note = sys.argv[4] if len(sys.argv) > 4 else ""
    gdn = json.load(open(gdn_path))
    fla = json.load(open(fla_path)) if os.path.exists(fla_path) else {"rows": [], "decode": []}
    key = lambda r: (r["B"], r["T"], r["H"], r["HV"])
    fla_by_shape = [{key(r): r for r in fla.get(op, [])} for op in ("rows", "kda")]  # GDN's, KDA's (fla_kda_*)
    fla_dec = {r["seqs"]: r for r in fla.get("decode", [])}
    rows = []
    for r in gdn["rows"]:
        m = dict(r)
        for fla_rows in fla_by_shape:
            m.update({k: v for k, v in fla_rows.get(key(r), {}).items() if k.startswith("fla_")})
        rows.append(m)
    decode = []
    for r in gdn["decode"]:
        m = dict(r)
        m.update({k: v for k, v in fla_dec.get(r["seqs"], {}).items() if k.startswith("fla_")})
        decode.append(m)
    date = datetime.date.today().isoformat()
    gpu = gdn["gpu"]
    commit = gdn.get("gdn_commit", "unknown")
    out = {"date": date, "gpu": gpu, "gdn_commit": commit, "copy_bandwidth_bytes_per_s": gdn["copy_bandwidth_bytes_per_s"],
           "fla": {k: fla.get(k) for k in ("torch", "triton")}, "note": note, "rows": rows, "decode": decode}
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    os.makedirs(results, exist_ok=True)
    base = os.path.join(results, f"{date}-{slug}")
    json.dump(out, open(base + ".json", "w"), indent=2)

    def f(x, fmt="{:.3f}"):
        return fmt.format(x) if isinstance(x, (int, float)) else "—"

    def fla_cell(r, key, unit, fmt="{:.3f}"):
        """FLA's figure r[key_unit], "error" where FLA raised (r[key_error]), else "—"."""
        return f(r[f"{key}_{unit}"], fmt) if f"{key}_{unit}" in r else ("error" if f"{key}_error" in r else "—")

    def ratio(a, b):
        return f"{a / b:.2f}×" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0 else "—"

    lines = [f"GPU: {gpu}, {date}, gdn {commit}; copy bandwidth {gdn['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s. {note}",
             "",
             "gdn fwd: the forward alone (for_backward false), as FLA's forward is timed (torch.no_grad; its kernels "
             "are the same either way); gdn fwd of a training step also stores what gdn's backward reads.",
             "",
             "| B×T×H (HV) ×D | gdn fwd ms | FLA fwd ms | speed-up | gdn fwd of a training step ms | speed-up "
             "| gdn fwd+bwd ms | FLA fwd+bwd ms | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fla_fwd = r.get("fla_fwd_ms")
        lines.append(f"| {r['B']}×{r['T']}×{r['H']} ({r['HV']}) ×{r['D']} | {f(r.get('fwd_infer_ms'))} | "
                     f"{fla_cell(r, 'fla_fwd', 'ms')} | {ratio(fla_fwd, r.get('fwd_infer_ms'))} | {f(r['fwd_ms'])} | "
                     f"{ratio(fla_fwd, r['fwd_ms'])} | {f(r['fwdbwd_ms'])} | {fla_cell(r, 'fla_fwdbwd', 'ms')} | "
                     f"{ratio(r.get('fla_fwdbwd_ms'), r['fwdbwd_ms'])} |")
    if any("fla_kda_fwd_ms" in r or "fla_kda_fwd_error" in r for r in rows):
        lines += ["", "KDA (a gate per key dimension; FLA's chunk_kda):", "",
                  "| B×T×H (HV) ×D | gdn fwd ms | FLA fwd ms | speed-up | gdn fwd of a training step ms | "
                  "gdn fwd+bwd ms | FLA fwd+bwd ms | speed-up |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['B']}×{r['T']}×{r['H']} ({r['HV']}) ×{r['D']} | {f(r.get('kda_fwd_infer_ms'))} | "
                         f"{fla_cell(r, 'fla_kda_fwd', 'ms')} | {ratio(r.get('fla_kda_fwd_ms'), r.get('kda_fwd_infer_ms'))} | "
                         f"{f(r.get('kda_fwd_ms'))} | {f(r.get('kda_fwdbwd_ms'))} | {fla_cell(r, 'fla_kda_fwdbwd', 'ms')} | "
                         f"{ratio(r.get('fla_kda_fwdbwd_ms'), r.get('kda_fwdbwd_ms'))} |")
    lines += ["", "| decode seqs (HV=32, D=128) | gdn µs | of copy bandwidth | same bytes copied µs | FLA µs |",
              "|---|---|---|---|---|"]
    for r in decode:
        lines.append(f"| {r['seqs']} | {r['decode_us']:.1f} | {100 * r['decode_bw_fraction']:.1f}% | "
                     f"{f(r.get('copy_same_bytes_us'), '{:.1f}')} | {fla_cell(r, 'fla_decode', 'us', '{:.1f}')} |")
    open(base + ".md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {base}.json and {base}.md")


if __name__ == "__main__":
    main()
