"""Times FLA's chunk_gated_delta_rule (forward, forward+backward) and
fused_recurrent_gated_delta_rule (one decode token) on the shapes of gdn_gpu_bench, with
CUDA-event medians after warm-up (triton.testing.do_bench). FLA is imported from --fla (the
folder that holds the `fla` package); it is never part of this repository.

    python3 bench/gpu/fla_bench.py --fla PATH --out fla.json [--quick]
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fla", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, args.fla)
    import torch
    import torch.nn.functional as F
    import triton
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    dev = "cuda"
    rep = 50 if args.quick else 200
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
           "rows": [], "decode": []}

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")

    for B, T, H, HV in [(8, 2048, 16, 16), (2, 8192, 16, 16), (4, 4096, 16, 32)]:
        t0 = time.time()
        q = torch.randn(B, T, H, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
        k = torch.randn(B, T, H, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
        v = torch.randn(B, T, HV, 128, dtype=torch.bfloat16, device=dev, requires_grad=True)
        g = torch.log(0.7 + 0.29 * torch.rand(B, T, HV, dtype=torch.float32, device=dev)).requires_grad_()
        beta = (0.05 + 0.9 * torch.rand(B, T, HV, dtype=torch.float32, device=dev)).to(torch.bfloat16).requires_grad_()
        do = torch.randn(B, T, HV, 128, dtype=torch.bfloat16, device=dev)

        def fwd():
            with torch.no_grad():
                chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)

        def fwdbwd():
            o, _ = chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)
            o.backward(do)

        row = {"B": B, "T": T, "H": H, "HV": HV, "D": 128}
        try:
            row["fla_fwd_ms"] = bench(fwd)
        except Exception as e:  # report, keep going
            row["fla_fwd_error"] = repr(e)[:300]
        try:
            row["fla_fwdbwd_ms"] = bench(fwdbwd)
        except Exception as e:
            row["fla_fwdbwd_error"] = repr(e)[:300]
        print(f"FLA chunk B={B} T={T} H={H} HV={HV}: {row} ({time.time() - t0:.0f} s incl. compile)", flush=True)
        out["rows"].append(row)
        del q, k, v, g, beta, do
        torch.cuda.empty_cache()

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
        except Exception as e:
            row["fla_decode_error"] = repr(e)[:300]
        print(f"FLA decode seqs={n}: {row}", flush=True)
        out["decode"].append(row)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
