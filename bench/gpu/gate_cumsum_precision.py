"""Why the scalar gate's fp32 dg misses 1e-4 when every gate is very negative (bench/gpu/NOTES.md,
"dg with very negative gates"): the GPU check's very_negative_gates case (GDN, one 64-token chunk,
K = V = 128, gates U(-35, -30) in fp32, no h0 / dht) in the chunk math of chunk_math_check.py,
fp64 everywhere except the cumulative gate γ, which is formed as the kernels form it:
  exact        γ in fp64 (the reference)
  fp32 scan    load_gate_beta's fp32 warp scan (pairs, then a shuffle-up scan), e^{γ_i − γ_j} from
               the fp32 difference of two stored values (the kernels before the fix)
  fp32 seq     a plain sequential fp32 cumulative sum (no better: the stored values are the limit)
  hi + lo      γ = hi + lo, two fp32 per row (hi = fp32(γ), lo = fp32(γ − hi), the scan in fp64),
               γ_i − γ_j = (hi_i − hi_j) + (lo_i − lo_j) in fp32 (the fix)
and, with γ as hi + lo, every mma as the fp32-input kernels do it ("split mma": operands as bf16 hi +
bf16 lo, three products, lo·lo dropped), or every product in fp32 ("all fp32").
Prints the relative error of dg (‖dg − ref‖/‖ref‖) over N inputs (default 100; ~1 min):
    python3 bench/gpu/gate_cumsum_precision.py [N]       (Debian's python3-torch is enough)
Result (100 inputs): fp32 scan median 4.4e-5, p90 9.0e-5, max 1.5e-4, 8/100 above 1e-4 (the GPU:
1.06e-4 on seed 3121487717; that seed's inputs, dumped from gdn::test::make_problem, give 9.8e-5 here); fp32 seq median 3.4e-5;
hi + lo ≤ 1.2e-8; hi + lo with the split mma: median 7.7e-6, p90 1.2e-5, max 2.4e-5 (the GPU after
the fix, 20 seeds: median ~8e-6, max 2.6e-5); all fp32: median 4.0e-7, max 1.1e-6.
"""
import sys, torch
D, F = torch.float64, torch.float32
C, K, V = 64, 128, 128


def kernel_scan(g):
    """load_gate_beta: lane l sums its pair, a Hillis-Steele shuffle-up scan over 32 lanes, then
    gam[2l] = s − x1, gam[2l+1] = s; every operation in fp32."""
    x0, x1 = g[0::2].clone(), g[1::2].clone()
    s = x0 + x1
    o = 1
    while o < 32:
        y = torch.cat([torch.zeros(o, dtype=F), s[:-o]])
        s = torch.where(torch.arange(32) >= o, s + y, s)
        o *= 2
    gam = torch.empty(C, dtype=F)
    gam[0::2], gam[1::2] = s - x1, s
    return gam


def dg_of(q, k, v, b, do, gam, diff, eg, dtype=D, mm=torch.matmul):
    """dg of one chunk (S = 0 on entry, dht = 0), Γ_ij = e^{diff(i, j)} for j ≤ i, e^γ = eg."""
    scale = K ** -0.5
    q, k, v, b, do = (x.to(dtype) for x in (q, k, v, b, do))
    low = torch.tril(torch.ones(C, C, dtype=torch.bool))
    Gam = torch.where(low, torch.exp(torch.where(low, diff, 0).to(D)), 0).to(dtype)
    eg = eg.to(dtype)
    GG = torch.tril(mm(k, k.T) * Gam, -1)
    A = torch.linalg.inv((torch.eye(C, dtype=D) + (b[:, None] * GG).to(D))).to(dtype)
    W = mm(A * b[None, :], k * eg[:, None]); U = mm(A * b[None, :], v)
    Vp = U  # S = 0
    P = torch.tril(mm(q, k.T)) * Gam
    dVp = scale * mm(P.T, do)  # dS_next = 0
    dW = -dVp @ torch.zeros(K, V, dtype=dtype).T
    dgam = torch.zeros(C, dtype=dtype)
    dP = torch.tril(scale * mm(do, Vp.T)); R = torch.tril(dP * P, -1); dgam += R.sum(1) - R.sum(0)  # the diagonal cancels
    dA = (mm(dW, k.T) * eg[None, :] + mm(dVp, v.T)) * b[None, :]
    dMs = torch.tril(-mm(A.T, mm(dA, A.T)), -1)
    R2 = b[:, None] * dMs * GG; dgam += R2.sum(1) - R2.sum(0)
    Tw = mm(A.T, dW); dgam += b * eg * (Tw * k).sum(1)
    return torch.flip(torch.cumsum(torch.flip(dgam, [0]), 0), [0]).to(D)


def split_mm(a, b):
    """The kernels' fp32-input mma: each operand as bf16 hi + bf16 lo, three products (lo·lo dropped)."""
    r16 = lambda x: x.to(torch.bfloat16).to(D)
    ah, bh = r16(a), r16(b)
    return (ah @ bh + ah @ r16(b - bh) + r16(a - ah) @ bh).to(a.dtype)


def inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    rn = lambda *s: torch.randn(*s, dtype=D, generator=gen).to(F).to(D)
    q = torch.nn.functional.normalize(rn(C, K), dim=-1); k = torch.nn.functional.normalize(rn(C, K), dim=-1)
    v, do = rn(C, V), rn(C, V)
    g = (-30 - 5 * torch.rand(C, dtype=D, generator=gen)).to(F)
    b = (2 * torch.rand(C, dtype=D, generator=gen)).to(F).to(D)
    return q, k, v, b, do, g


def variants(g):
    exact = torch.cumsum(g.to(D), 0)
    out = {"exact": (exact, exact[:, None] - exact[None, :], torch.exp(exact))}
    for name, gam in (("fp32 scan", kernel_scan(g)), ("fp32 seq", torch.cumsum(g, 0))):
        out[name] = (gam.to(D), (gam[:, None] - gam[None, :]).to(D), torch.exp(gam.to(D)))
    hi = exact.to(F); lo = (exact - hi.to(D)).to(F)
    d = (hi[:, None] - hi[None, :]) + (lo[:, None] - lo[None, :])
    out["hi + lo"] = (exact, d.to(D), torch.exp(hi.to(D)))
    return out


n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
errs = {}
for seed in range(n):
    q, k, v, b, do, g = inputs(seed)
    vs = variants(g)
    ref = dg_of(q, k, v, b, do, *vs["exact"])
    for name, (gam, diff, eg) in vs.items():
        if name != "exact":
            errs.setdefault(name, []).append(((dg_of(q, k, v, b, do, gam, diff, eg) - ref).norm() / ref.norm()).item())
    gam, diff, eg = vs["hi + lo"]
    d = dg_of(q, k, v, b, do, gam, diff, eg, mm=split_mm)
    errs.setdefault("hi + lo, split mma", []).append(((d - ref).norm() / ref.norm()).item())
    for name in ("exact", "hi + lo"):
        gam, diff, eg = vs[name]
        d = dg_of(q, k, v, b, do, gam, diff.to(F), eg.to(F), dtype=F)
        errs.setdefault(f"all fp32, γ {name}", []).append(((d - ref).norm() / ref.norm()).item())
for name, e in errs.items():
    e = sorted(e)
    print(f"{name:22s} median {e[len(e) // 2]:.2e}  p90 {e[int(0.9 * len(e))]:.2e}  max {e[-1]:.2e}  "
          f">2e-5: {sum(x > 2e-5 for x in e)}/{len(e)}  >1e-4: {sum(x > 1e-4 for x in e)}/{len(e)}")
