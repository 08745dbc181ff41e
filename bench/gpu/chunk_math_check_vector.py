"""The vector gate's chunkwise decomposition as the CUDA kernels implement it (src/ops/cuda/gate.cuh,
the G = vector paths of chunk_fwd.cu and chunk_bwd.cu, intra_grad_vector_kernel), written out in
fp64 PyTorch for one sequence and head and checked against autograd of the plain recurrence
S = Diag(e^{g_t}) S (+ delta or additive write): KDA (delta rule) and GLA (additive rule), T not a
multiple of the chunk, per-element gates of -30 and 0 beside ordinary ones, beta in [0, 2), h0,
dht. The gated products follow the kernels' sub-chunk scheme: blocks below the 16x16 diagonal
blocks by one product per reference R = 16 I with both factors <= 1 (asserted), the diagonal
blocks term by term. Prints relative errors (~1e-15).
    python3 bench/gpu/chunk_math_check_vector.py      (Debian's python3-torch is enough)
"""
import torch
torch.manual_seed(0)
D = torch.float64
T, K, V, C, SUB = 150, 16, 12, 64, 16
scale = K ** -0.5


def problem():
    q = torch.randn(T, K, dtype=D); k = torch.nn.functional.normalize(torch.randn(T, K, dtype=D), dim=-1)
    v = torch.randn(T, V, dtype=D); g = torch.log(0.7 + 0.29 * torch.rand(T, K, dtype=D))
    u = torch.rand(T, K, dtype=D); g[u < 0.1] = -30.0; g[(u >= 0.1) & (u < 0.25)] = 0.0
    b = 2 * torch.rand(T, dtype=D); h0 = torch.randn(K, V, dtype=D) * .5
    do = torch.randn(T, V, dtype=D); dht = torch.randn(K, V, dtype=D) * .5
    return q, k, v, g, b, h0, do, dht


def recurrence(q, k, v, g, b, h0, delta):
    S = h0.clone(); os = []
    for t in range(T):
        S = torch.exp(g[t])[:, None] * S
        vn = b[t] * (v[t] - S.T @ k[t]) if delta else v[t]
        S = S + torch.outer(k[t], vn); os.append(scale * S.T @ q[t])
    return torch.stack(os), S


def ref_tile(x, y, gam, R):  # rows < R: y e^{γ_R − γ}; rows ≥ R: x e^{γ − γ_R}; all factors ≤ 1
    f_lo = torch.exp(gam[R][None, :] - gam[:R]); f_hi = torch.exp(gam[R:] - gam[R][None, :])
    assert f_lo.max() <= 1 and f_hi.max() <= 1
    return torch.cat([y[:R] * f_lo, x[R:] * f_hi])


def gated_lower(x, y, gam, diag):  # gate.cuh gated_lower
    Z = torch.zeros(C, C, dtype=D)
    for i in range(C):
        b0 = i // SUB * SUB
        for j in range(b0, i + (1 if diag else 0)):
            Z[i, j] = (x[i] * y[j] * torch.exp(gam[i] - gam[j])).sum()
    for R in range(SUB, C, SUB):
        S = ref_tile(x, y, gam, R)
        Z[R:R + SUB, :R] = S[R:R + SUB] @ S[:R].T
    return Z


def gated_lower_backward(dz, x, y, gam):  # gate.cuh gated_lower_backward: dx, dy, dγ
    dx = torch.zeros(C, K, dtype=D); dy = torch.zeros(C, K, dtype=D); dg = torch.zeros(C, K, dtype=D)
    for i in range(C):
        b0 = i // SUB * SUB
        row = sum((dz[i, j] * y[j] * torch.exp(gam[i] - gam[j]) for j in range(b0, i)), torch.zeros(K, dtype=D))
        col = sum((dz[m, i] * x[m] * torch.exp(gam[m] - gam[i]) for m in range(i + 1, b0 + SUB)), torch.zeros(K, dtype=D))
        dx[i] += row + dz[i, i] * y[i]; dy[i] += col + dz[i, i] * x[i]; dg[i] += x[i] * row - y[i] * col
    for R in range(SUB, C, SUB):
        S = ref_tile(x, y, gam, R)
        a = (dz[R:R + SUB, :R] @ S[:R]) * torch.exp(gam[R:R + SUB] - gam[R][None, :])
        dx[R:R + SUB] += a; dg[R:R + SUB] += x[R:R + SUB] * a
        bb = (dz[R:, R - SUB:R].T @ S[R:]) * torch.exp(gam[R][None, :] - gam[R - SUB:R])
        dy[R - SUB:R] += bb; dg[R - SUB:R] -= y[R - SUB:R] * bb
    return dx, dy, dg


def check(delta):
    q, k, v, g, b, h0, do, dht = problem()
    xs = [x.clone().requires_grad_() for x in (q, k, v, g, b, h0)]
    o, ht = recurrence(*xs, delta); ((o * do).sum() + (ht * dht).sum()).backward()
    ref = [x.grad for x in xs]
    NC = (T + C - 1) // C

    def chunk(c):
        s = c * C; L = min(C, T - s)
        pad = lambda x: torch.cat([x[s:s + L], torch.zeros((C - L,) + x.shape[1:], dtype=D)])
        return s, L, pad(q), pad(k), pad(v), torch.cumsum(pad(g), 0), pad(b), pad(do)

    # forward: prepare / state pass / output
    S = h0.clone(); hs, Ws, Vps, As, Ns = [], [], [], [], []
    O = torch.zeros(T, V, dtype=D)
    for c in range(NC):
        s, L, Q, Kc, Vc, gam, B, _ = chunk(c)
        eg = torch.exp(gam)
        if delta:
            N = gated_lower(Kc, Kc, gam, False)
            A = torch.linalg.inv(torch.eye(C, dtype=D) + B[:, None] * N)
            W = (A * B[None, :]) @ (Kc * eg); U = (A * B[None, :]) @ Vc
            Vp = U - W @ S; Ws.append(W); As.append(A); Ns.append(N)
        else:
            Vp = Vc.clone()
        hs.append(S.clone()); Vps.append(Vp)
        P = gated_lower(Q, Kc, gam, True)
        O[s:s + L] = (scale * ((Q * eg) @ S + P @ Vp))[:L]
        gl = gam[L - 1]; Kd = Kc * torch.exp(gl[None, :] - gam)
        S = torch.exp(gl)[:, None] * S + Kd.T @ Vp
    errs = {'o': (O - o).norm() / o.norm(), 'ht': (S - ht).norm() / ht.norm()}
    # backward: intra_dv + state_bwd (reverse)
    dS = dht.clone(); dhs = [None] * NC; dVps = [None] * NC
    for c in reversed(range(NC)):
        s, L, Q, Kc, Vc, gam, B, dO = chunk(c)
        P = gated_lower(Q, Kc, gam, True)
        dhs[c] = dS.clone(); gl = gam[L - 1]; Kd = Kc * torch.exp(gl[None, :] - gam)
        dVp = scale * P.T @ dO + Kd @ dS; dVps[c] = dVp
        Qg = scale * Q * torch.exp(gam)
        dS = torch.exp(gl)[:, None] * dS + Qg.T @ dO - (Ws[c].T @ dVp if delta else 0)
    dh0 = dS
    dq = torch.zeros(T, K, dtype=D); dk = torch.zeros(T, K, dtype=D); dv = torch.zeros(T, V, dtype=D)
    dg = torch.zeros(T, K, dtype=D); db = torch.zeros(T, dtype=D)
    for c in range(NC):
        s, L, Q, Kc, Vc, gam, B, dO = chunk(c)
        Sx, dSn, Vp, dVp, gl, eg = hs[c], dhs[c], Vps[c], dVps[c], gam[L - 1], torch.exp(gam)
        # state_grad: the state parts, dW, the decay's gate term
        dQ = scale * eg * (dO @ Sx.T); dK = torch.exp(gl[None, :] - gam) * (Vp @ dSn.T)
        dgl = torch.exp(gl) * (dSn * Sx).sum(1)
        # intra_grad_vector_kernel
        dgam = Q * dQ - Kc * dK
        kdsum = (Kc * dK).sum(0)
        dP = torch.tril(scale * dO @ Vp.T)
        a, bb, gg = gated_lower_backward(dP, Q, Kc, gam); dQ += a; dK += bb; dgam += gg
        dbc = torch.zeros(C, dtype=D)
        if delta:
            A, N, dW = As[c], Ns[c], -dVp @ Sx.T
            dA = (dW @ (Kc * eg).T + dVp @ Vc.T) * B[None, :]
            X = dA @ A.T; dM = torch.tril(-A.T @ X, -1)
            dbc += (dM * N).sum(1); dN = B[:, None] * dM
            Tw = A.T @ dW; ew = eg * Tw
            dK += B[:, None] * ew; dgam += B[:, None] * ew * Kc; dbc += (ew * Kc).sum(1)
            Tu = A.T @ dVp; dV = B[:, None] * Tu; dbc += (Tu * Vc).sum(1)
            a, bb, gg = gated_lower_backward(dN, Kc, Kc, gam); dK += a + bb; dgam += gg
        else:
            dV = dVp
        acc = dgl + kdsum; dgc = torch.zeros(C, K, dtype=D)
        for i in reversed(range(L)):
            acc = acc + dgam[i]; dgc[i] = acc
        dq[s:s + L] = dQ[:L]; dk[s:s + L] = dK[:L]; dv[s:s + L] = dV[:L]; dg[s:s + L] = dgc[:L]; db[s:s + L] = dbc[:L]
    names = 'q k v g b h0'.split()
    for n, x, r in zip(names, [dq, dk, dv, dg, db, dh0], ref):
        if n == 'b' and not delta: continue
        errs['d' + n] = (x - r).norm() / r.norm()
    print('kda' if delta else 'gla', ' '.join(f'{n} {e.item():.1e}' for n, e in errs.items()))
    assert max(errs.values()) < 1e-10


check(True)
check(False)
