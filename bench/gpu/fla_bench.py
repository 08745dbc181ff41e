"""Times FLA's chunk_gated_delta_rule (forward, forward+backward) and
fused_recurrent_gated_delta_rule (one decode token) on the shapes of gdn_gpu_bench (with --kda,
also chunk_kda, the gate per key dimension, last, as its compile and autotune take minutes; with
--kda-only, chunk_kda alone), with
CUDA-event medians after warm-up and an L2 flush before each call, as triton.testing.do_bench
takes them except for the flush: a 256 MiB buffer is read (the L2 left clean), as gdn's
event_median_ms does (src/ops/cuda/timing.h), instead of zeroed (the L2 left dirty, which the
timed call pays for by writing it back); decode is timed both ways. FLA is imported from --fla
(the folder that holds the `fla` package); it is never part of this repository.

    python3 bench/gpu/fla_bench.py --fla PATH --out fla.json [--quick] [--decode-only] [--kda | --kda-only]
                                   [--shape BxTxHxHV ...]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fla", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--decode-only", action="store_true", help="skip the chunk shapes (minutes of Triton autotune)")
    ap.add_argument("--kda", action="store_true", help="also time chunk_kda at the chunk shapes, after decode")
    ap.add_argument("--kda-only", action="store_true", help="time chunk_kda alone (no GDN rows, no decode)")
    ap.add_argument("--shape", action="append", default=[], metavar="BxTxHxHV",
                    help="time only these of the chunk shapes (repeatable; each costs minutes of autotune)")
    args = ap.parse_args()
    sys.path.insert(0, args.fla)
    import torch
    import torch.nn.functional as F
    import triton
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    dev = "cuda"
    rep = 50 if args.quick else 200
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "rows": [], "decode": [], "kda": []}

    cache = torch.zeros(256 << 18, dtype=torch.int32, device=dev)  # 256 MiB

    def save():
        """The rows so far, written after each one: a run stopped midway (run.sh --fla-timeout) keeps them."""
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)

    def bench(fn, flush="clean"):
        """Median ms of fn over ~`rep` ms of calls after ~25 ms of warm-up (do_bench's budgets)."""
        flush_l2 = cache.sum if flush == "clean" else cache.zero_
        fn()
        torch.cuda.synchronize()
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(5):
            flush_l2()
            fn()
        t1.record()
        torch.cuda.synchronize()
        estimate = t0.elapsed_time(t1) / 5
        for _ in range(max(1, int(25 / estimate))):
            fn()
        n = max(1, int(rep / estimate))
        start = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        stop = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            flush_l2()
            start[i].record()
            fn()
            stop[i].record()
        torch.cuda.synchronize()
        return statistics.median(a.elapsed_time(b) for a, b in zip(start, stop))

    shapes = [] if args.decode_only else [(8, 2048, 16, 16), (2, 8192, 16, 16), (4, 4096, 16, 32)]
    if args.shape:
        wanted = {tuple(int(x) for x in s.split("x")) for s in args.shape}
        unknown = wanted - set(shapes)
        if unknown:
            sys.exit(f"fla_bench.py: --shape {sorted(unknown)} is not one of gdn_gpu_bench's shapes {shapes}")
        shapes = [s for s in shapes if s in wanted]

    def time_rows(op, label, key, gate_per_key, out_rows):
        """fwd and fwd+bwd of op(q, k, v, g, beta) at each shape, as fla_{key}fwd_ms, fla_{key}fwdbwd_ms;
        g per key dimension where gate_per_key."""
        for B, T, H, HV in shapes:
            t0 = time.time()
            q = torch.randn(B, T, H, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
            k = torch.randn(B, T, H, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
            v = torch.randn(B, T, HV, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
            gshape = (B, T, HV, 128) if gate_per_key else (B, T, HV)
            g = torch.log(0.7 + 0.29 * torch.rand(*gshape, dtype=torch.float32, device=dev)).requires_grad_()
            beta = (0.05 + 0.9 * torch.rand(B, T, HV, dtype=torch.float32, device=dev)).to(torch.bfloat16).requires_grad_()
            do = torch.randn(B, T, HV, 128, dtype=torch.bfloat16, device=dev)

            def fwd():
                with torch.no_grad():
                    op(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)

            def fwdbwd():
                o, _ = op(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
                o.backward(do)

            row = {"B": B, "T": T, "H": H, "HV": HV, "D": 128}
            for name, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
                try:
                    row[f"fla_{key}{name}_ms"] = bench(fn)
                except Exception as e:  # report, keep going
                    row[f"fla_{key}{name}_error"] = repr(e)[:300]
            print(f"FLA {label} B={B} T={T} H={H} HV={HV}: {row} ({time.time() - t0:.0f} s incl. compile)", flush=True)
            out_rows.append(row)
            save()
            del q, k, v, g, beta, do
            torch.cuda.empty_cache()

    def time_decode():
        """fused_recurrent_gated_delta_rule, one token, at 1..1024 sequences (HV = 32), both flushes."""
        H, HV = 16, 32
        for n in [1, 32, 256, 1024]:
            q = torch.randn(n, 1, H, 128, dtype=torch.bfloat16, device=dev)
            k = torch.randn(n, 1, H, 128, dtype=torch.bfloat16, device=dev)
            v = torch.randn(n, 1, HV, 128, dtype=torch.bfloat16, device=dev)
            g = torch.log(0.7 + 0.29 * torch.rand(n, 1, HV, device=dev))
            beta = (0.05 + 0.9 * torch.rand(n, 1, HV, device=dev)).to(torch.bfloat16)
            h0 = 0.1 * torch.randn(n, HV, 128, 128, device=dev)

            def step():
                fused_recurrent_gated_delta_rule(q, k, v, g, beta=beta, initial_state=h0, output_final_state=True,
                                                 use_qk_l2norm_in_kernel=True)

            row = {"seqs": n}
            try:
                step()
                torch.cuda.synchronize()
                row["fla_decode_us"] = 1e3 * bench(step)
                row["fla_decode_us_dirty_l2"] = 1e3 * bench(step, flush="dirty")
            except Exception as e:
                row["fla_decode_error"] = repr(e)[:300]
            print(f"FLA decode seqs={n}: {row}", flush=True)
            out["decode"].append(row)
            save()

    if not args.kda_only:
        time_rows(chunk_gated_delta_rule, "chunk", "", False, out["rows"])
        time_decode()
    if args.kda or args.kda_only:
        from fla.ops.kda import chunk_kda
        time_rows(chunk_kda, "chunk_kda", "kda_", True, out["kda"])


if __name__ == "__main__":
    main()
