"""An independent PyTorch (fp64, CPU) implementation of gdn's models, written from
shared/DESIGN.md §3 (the autoencoder head from mad-lab's mad/model/auto_encoder.py): it reads a dump written by tests/test_torch_model.cpp (the weights,
the batch, the fp32 loss and every parameter gradient of gdn's model) and checks that the
loss and each gradient agree to a relative error <= 1e-4. A gradient that is a sum with heavy
cancellation (e.g. A_log = sum_t dg_t g_t when its terms nearly cancel) cannot hold 1e-4 in fp32
arithmetic: such a gradient may instead be within twice the error of this same model run by torch
in fp32 on the same inputs, a same-precision reference.

usage: python3 model_torch.py DUMP.safetensors     (exit status 1 on any mismatch)
"""
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": torch.float32, "I32": torch.int32, "F64": torch.float64}
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dtypes[info["dtype"]])
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def short_conv(x, w):
    # x [B, T, C], w [C, 1, W]: causal depthwise convolution, then SiLU
    C, W = w.shape[0], w.shape[2]
    y = F.conv1d(F.pad(x.transpose(1, 2), (W - 1, 0)), w, groups=C)
    return F.silu(y.transpose(1, 2))


def l2norm(x):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6)


def recurrence(q, k, v, g, beta, delta):
    # q, k [B, T, HV, K] (already expanded to value heads), v [B, T, HV, V], g [B, T, HV]
    B, T, HV, K = q.shape
    V = v.shape[-1]
    S = q.new_zeros(B, HV, K, V)
    scale = K ** -0.5
    out = []
    for t in range(T):
        S = S * torch.exp(g[:, t])[..., None, None]
        kt, vt = k[:, t], v[:, t]
        if delta:
            vt = beta[:, t][..., None] * (vt - torch.einsum("bhkv,bhk->bhv", S, kt))
        S = S + torch.einsum("bhk,bhv->bhkv", kt, vt)
        out.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]) * scale)
    return torch.stack(out, 1)


def delta_mixer(x, P, p, cfg, variant):
    B, T, _ = x.shape
    H, K = cfg["heads"], cfg["head_dim"]
    HV = cfg["v_heads"] or H
    V = int(K * cfg["expand_v"])
    q = short_conv(x @ P[p + "q_proj.weight"].T, P[p + "q_conv1d.weight"]).view(B, T, H, K)
    k = short_conv(x @ P[p + "k_proj.weight"].T, P[p + "k_conv1d.weight"]).view(B, T, H, K)
    v = short_conv(x @ P[p + "v_proj.weight"].T, P[p + "v_conv1d.weight"]).view(B, T, HV, V)
    q, k = l2norm(q), l2norm(k)
    q = q.repeat_interleave(HV // H, dim=2)
    k = k.repeat_interleave(HV // H, dim=2)
    g = torch.zeros(B, T, HV, dtype=x.dtype)
    beta = None
    if variant in ("gated_deltanet", "mamba2"):
        dt = F.softplus(x @ P[p + "a_proj.weight"].T + P[p + "dt_bias"])
        g = -torch.exp(P[p + "A_log"]) * dt
        if variant == "mamba2":
            v = v * dt[..., None]
    if variant in ("gated_deltanet", "deltanet"):
        beta = torch.sigmoid(x @ P[p + "b_proj.weight"].T)
        if cfg["allow_neg_eigval"]:
            beta = beta * 2
    o = recurrence(q, k, v, g, beta, variant in ("gated_deltanet", "deltanet"))
    z = (x @ P[p + "g_proj.weight"].T).view(B, T, HV, V)
    o = rms_norm(o, P[p + "o_norm.weight"], cfg["norm_eps"]) * F.silu(z)
    return o.reshape(B, T, HV * V) @ P[p + "o_proj.weight"].T


def rope(x, theta):
    # x [B, T, H, D], rotate-half
    T, D = x.shape[1], x.shape[-1]
    inv = theta ** (-torch.arange(0, D // 2, dtype=x.dtype) * 2 / D)
    ang = torch.arange(T, dtype=x.dtype)[:, None] * inv[None, :]
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def attention(x, P, p, cfg, window):
    B, T, D = x.shape
    H = cfg["attn_heads"] or cfg["heads"]
    KVH = cfg["attn_kv_heads"] or H
    Dh = cfg["attn_head_dim"] or D // H
    q = rope((x @ P[p + "q_proj.weight"].T).view(B, T, H, Dh), cfg["rope_theta"])
    k = rope((x @ P[p + "k_proj.weight"].T).view(B, T, KVH, Dh), cfg["rope_theta"])
    v = (x @ P[p + "v_proj.weight"].T).view(B, T, KVH, Dh)
    k = k.repeat_interleave(H // KVH, dim=2)
    v = v.repeat_interleave(H // KVH, dim=2)
    s = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(Dh)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window > 0:
        allowed = allowed & (j > i - window)
    s = s.masked_fill(~allowed, float("-inf"))
    o = torch.einsum("bhij,bjhd->bihd", torch.softmax(s, -1), v)
    return o.reshape(B, T, H * Dh) @ P[p + "o_proj.weight"].T


def sincos_positions(T, D, dtype):
    """mad-lab's posemb_sincos_1d: [sin(p w) | cos(p w)], w_i = 10000^(-i / (D/2 - 1))."""
    half = D // 2
    w = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000) / (half - 1)))
    angle = torch.arange(T, dtype=torch.float64)[:, None] * w[None, :]
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    return F.pad(table, (0, D % 2)).to(dtype)


def mad_decoder(code, P, eps, T):
    """MAD's AutoEncoder.decode up to the unembed: every position from code + its embedding."""
    x = code[:, None, :] + sincos_positions(T, code.shape[-1], code.dtype)[None]
    p = "model.decoder."
    for i in (1, 2):
        x = rms_norm(x, P[f"{p}norm{i}.weight"], eps)
        x = F.gelu(x @ P[f"{p}fc{i}.weight"].T + P[f"{p}fc{i}.bias"])
    return x


def model_loss(P, cfg, ids, labels):
    eps = cfg["norm_eps"]
    x = P["model.embeddings.weight"][ids.long()]
    for i in range(cfg["layers"]):
        mixer = cfg["mixers"][i % len(cfg["mixers"])]
        p = f"model.layers.{i}."
        h = rms_norm(x, P[p + "attn_norm.weight"], eps)
        if mixer == "attention":
            x = x + attention(h, P, p + "attn.", cfg, 0)
        elif mixer == "swa":
            x = x + attention(h, P, p + "attn.", cfg, cfg["window"])
        else:
            x = x + delta_mixer(h, P, p + "attn.", cfg, mixer)
        if cfg["mlp_hidden"] != -1:
            h = rms_norm(x, P[p + "mlp_norm.weight"], eps)
            m = F.silu(h @ P[p + "mlp.gate_proj.weight"].T) * (h @ P[p + "mlp.up_proj.weight"].T)
            x = x + m @ P[p + "mlp.down_proj.weight"].T
    if cfg.get("head", "lm") == "autoencoder":
        x = mad_decoder(x[:, -1], P, eps, ids.shape[1])
    h = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embeddings.weight"] if cfg["tie_embeddings"] else P["lm_head.weight"]
    logits = h @ head.T
    if "lm_head.bias" in P:
        logits = logits + P["lm_head.bias"]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.long().reshape(-1), ignore_index=-100)


def main(path):
    tensors, meta = load_safetensors(path)
    cfg = json.loads(meta["model_config"])
    names = json.loads(meta["params"])
    def loss_and_grads(dtype):
        P = {n: tensors[n].to(dtype).requires_grad_(True) for n in names}
        loss = model_loss(P, cfg, tensors["ids"], tensors["labels"])
        loss.backward()
        return loss, {n: P[n].grad.double() for n in names}

    loss, ref_grads = loss_and_grads(torch.float64)
    _, fp32_grads = loss_and_grads(torch.float32)
    ok = True
    gdn_loss = float(meta["loss"])
    rel = abs(gdn_loss - loss.item()) / abs(loss.item())
    print(f"loss: gdn {gdn_loss:.8f} torch {loss.item():.8f} rel {rel:.2e}")
    ok &= rel <= 1e-4
    worst = 0.0
    for n in names:
        ref = ref_grads[n]
        scale = max(ref.norm().item(), 1e-30)
        err = (tensors["grad." + n].double() - ref).norm().item() / scale
        fp32_err = (fp32_grads[n] - ref).norm().item() / scale
        worst = max(worst, err)
        if not (err <= 1e-4 or err <= 2 * fp32_err):
            print(f"MISMATCH {n}: relative error {err:.2e}, torch fp32's {fp32_err:.2e} (|ref| {scale:.3e})")
            ok = False
        elif err > 1e-4:
            print(f"ill-conditioned {n}: relative error {err:.2e} within twice torch fp32's {fp32_err:.2e}")
    print(f"{len(names)} parameter gradients, worst relative error {worst:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
