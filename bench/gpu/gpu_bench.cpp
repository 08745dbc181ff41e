// gdn_gpu_bench: times the CUDA kernels (CUDA-event medians after warm-up) and the device's
// copy bandwidth in the same run, and writes them as JSON (bench/gpu/run.sh merges them with
// FLA's timings, taken by fla_bench.py on the same machine). Rows time the delta rule (GDN) and,
// on the same inputs, the additive rule with a scalar gate (Mamba2's op): additive_* keys, and
// the vector gate (g [B,T,HV,128], the same α range per element) with the delta rule (KDA:
// kda_* keys) and the additive rule (GLA: gla_* keys). fwd_ms times the forward of a training
// step (for_backward: it stores what the backward reads), fwd_infer_ms the forward alone.
//   gdn_gpu_bench OUT.json [--quick | --profile]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../src/ops/cuda/timing.h"
#include "gdn_build_commit.h"  // generated in the build tree
#include "../../tests/gpu/gpu_util.h"

using gdn::cuda::DType;
using gdn::cuda::copy_ms;
using gdn::cuda::event_median_ms;
using gdn::cuda::L2Flush;
using gdn::gpu::cuda_check;
using gdn::gpu::DeviceBuffer;
using gdn::gpu::status_check;

namespace {

// Random device data: bf16 normals, fp32 log-gates (alpha in [0.7, 0.99]) and betas in (0, 1).
DeviceBuffer random_bf16(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> h(n);
  for (auto& e : h) e = gdn::cuda::bf16_bits(normal(rng));
  DeviceBuffer b(n * 2);
  cuda_check(cudaMemcpy(b.ptr, h.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  return b;
}
DeviceBuffer random_f32(size_t n, std::mt19937& rng, float lo, float hi, bool log_of) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> h(n);
  for (auto& e : h) e = log_of ? std::log(u(rng)) : u(rng);
  DeviceBuffer b(n * 4);
  cuda_check(cudaMemcpy(b.ptr, h.data(), b.bytes, cudaMemcpyHostToDevice), "upload");
  return b;
}

// reps == 0: one forward and one backward, then GDN's forward alone, untimed (for a profiler).
nlohmann::json bench_chunk(int B, int T, int H, int HV, std::mt19937& rng, int reps) {
  gdn::cuda::ChunkShape s;
  s.B = B, s.T = T, s.H = H, s.HV = HV, s.num_seqs = B, s.dtype = DType::bf16, s.l2norm_qk = true;
  const size_t qk = size_t(B) * T * H * 128, vv = size_t(B) * T * HV * 128, bt = size_t(B) * T * HV;
  DeviceBuffer q = random_bf16(qk, rng), k = random_bf16(qk, rng), v = random_bf16(vv, rng), d_o = random_bf16(vv, rng);
  DeviceBuffer g = random_f32(bt, rng, 0.7f, 0.99f, true), beta = random_f32(bt, rng, 0.05f, 0.95f, false);
  DeviceBuffer gv = random_f32(bt * 128, rng, 0.7f, 0.99f, true), dgv(bt * 128 * 4);
  DeviceBuffer o(vv * 2), dq(qk * 2), dk(qk * 2), dv(vv * 2), dg(bt * 4), dbeta(bt * 4);
  gdn::cuda::ChunkShape sv = s;  // the vector gate's workspace is the largest (gate tiles)
  sv.gate = gdn::cuda::Gate::vector;
  DeviceBuffer ws(std::max(gdn::cuda::chunk_forward_workspace_bytes(sv), gdn::cuda::chunk_backward_workspace_bytes(sv)));
  gdn::cuda::ChunkForwardArgs fa;
  fa.q = q.ptr, fa.k = k.ptr, fa.v = v.ptr, fa.g = g.as<float>(), fa.beta = beta.as<float>(), fa.o = o.ptr;
  gdn::cuda::ChunkBackwardArgs ba;
  ba.q = q.ptr, ba.k = k.ptr, ba.v = v.ptr, ba.g = g.as<float>(), ba.beta = beta.as<float>(), ba.d_o = d_o.ptr;
  ba.dq = dq.ptr, ba.dk = dk.ptr, ba.dv = dv.ptr, ba.dg = dg.as<float>(), ba.dbeta = dbeta.as<float>();
  ba.workspace_has_forward = true;  // a training step: the backward uses the forward's intermediates
  gdn::cuda::ChunkShape sa = s;  // the additive rule: no beta
  sa.update = gdn::cuda::Update::additive;
  gdn::cuda::ChunkForwardArgs faa = fa;
  gdn::cuda::ChunkBackwardArgs baa = ba;
  faa.beta = baa.beta = baa.dbeta = nullptr;
  gdn::cuda::ChunkShape sk = sv, sg = sv;  // KDA (delta rule) and GLA (additive rule)
  sg.update = gdn::cuda::Update::additive;
  gdn::cuda::ChunkForwardArgs fk = fa, fg = faa;
  gdn::cuda::ChunkBackwardArgs bk = ba, bg = baa;
  fk.g = fg.g = bk.g = bg.g = gv.as<float>();
  bk.dg = bg.dg = dgv.as<float>();
  auto fwd = [&](const gdn::cuda::ChunkShape& sh, const gdn::cuda::ChunkForwardArgs& a) {
    status_check(gdn::cuda::chunk_forward(sh, a, ws.ptr, ws.bytes, nullptr));
  };
  auto fwdbwd = [&](const gdn::cuda::ChunkShape& sh, const gdn::cuda::ChunkForwardArgs& a,
                    const gdn::cuda::ChunkBackwardArgs& b) {
    fwd(sh, a);
    status_check(gdn::cuda::chunk_backward(sh, b, ws.ptr, ws.bytes, nullptr));
  };
  auto infer = [](gdn::cuda::ChunkForwardArgs a) {
    a.for_backward = false;
    return a;
  };
  const gdn::cuda::ChunkForwardArgs fi = infer(fa), fai = infer(faa), fki = infer(fk), fgi = infer(fg);
  if (reps == 0) {
    fwdbwd(s, fa, ba);
    fwd(s, fi);
    fwdbwd(sk, fk, bk);
    cuda_check(cudaDeviceSynchronize(), "profile run");
    return {};
  }
  const double f = event_median_ms([&] { fwd(s, fa); }, 3, reps);
  const double fin = event_median_ms([&] { fwd(s, fi); }, 3, reps);
  const double ain = event_median_ms([&] { fwd(sa, fai); }, 3, reps);
  const double kin = event_median_ms([&] { fwd(sk, fki); }, 3, reps);
  const double gin = event_median_ms([&] { fwd(sg, fgi); }, 3, reps);
  const double fb = event_median_ms([&] { fwdbwd(s, fa, ba); }, 3, reps);
  const double af = event_median_ms([&] { fwd(sa, faa); }, 3, reps);
  const double afb = event_median_ms([&] { fwdbwd(sa, faa, baa); }, 3, reps);
  const double kf = event_median_ms([&] { fwd(sk, fk); }, 3, reps);
  const double kfb = event_median_ms([&] { fwdbwd(sk, fk, bk); }, 3, reps);
  const double gf = event_median_ms([&] { fwd(sg, fg); }, 3, reps);
  const double gfb = event_median_ms([&] { fwdbwd(sg, fg, bg); }, 3, reps);
  std::printf("chunk B=%d T=%d H=%d HV=%d: fwd %.3f ms, fwd+bwd %.3f ms; additive fwd %.3f ms (%.2fx of delta), "
              "fwd+bwd %.3f ms (%.2fx)\n", B, T, H, HV, f, fb, af, af / f, afb, afb / fb);
  std::printf("  vector gate: kda fwd %.3f ms (%.2fx of gdn), fwd+bwd %.3f ms (%.2fx); gla fwd %.3f ms (%.2fx of "
              "additive), fwd+bwd %.3f ms (%.2fx)\n", kf, kf / f, kfb, kfb / fb, gf, gf / af, gfb, gfb / afb);
  std::printf("  forward alone (inference): gdn %.3f ms (%.2fx of training's), additive %.3f (%.2fx), kda %.3f "
              "(%.2fx), gla %.3f (%.2fx)\n", fin, fin / f, ain, ain / af, kin, kin / kf, gin, gin / gf);
  return {{"B", B}, {"T", T}, {"H", H}, {"HV", HV}, {"D", 128}, {"fwd_ms", f}, {"fwdbwd_ms", fb},
          {"additive_fwd_ms", af}, {"additive_fwdbwd_ms", afb}, {"kda_fwd_ms", kf}, {"kda_fwdbwd_ms", kfb},
          {"gla_fwd_ms", gf}, {"gla_fwdbwd_ms", gfb}, {"fwd_infer_ms", fin}, {"additive_fwd_infer_ms", ain},
          {"kda_fwd_infer_ms", kin}, {"gla_fwd_infer_ms", gin}};
}

nlohmann::json bench_decode(int seqs, double copy_bw, std::mt19937& rng) {
  const int H = 16, HV = 32;
  const size_t state = size_t(HV) * 128 * 128;
  DeviceBuffer q = random_bf16(size_t(seqs) * H * 128, rng), k = random_bf16(size_t(seqs) * H * 128, rng),
               v = random_bf16(size_t(seqs) * HV * 128, rng);
  DeviceBuffer g = random_f32(size_t(seqs) * HV, rng, 0.7f, 0.99f, true),
               beta = random_f32(size_t(seqs) * HV, rng, 0.05f, 0.95f, false);
  DeviceBuffer pool(size_t(seqs) * state * 4), idx(size_t(seqs) * 4), o(size_t(seqs) * HV * 128 * 2);
  {
    std::vector<float> h(size_t(seqs) * state);
    gdn::gpu::fill_uniform(h, rng(), 0.1f);
    cuda_check(cudaMemcpy(pool.ptr, h.data(), pool.bytes, cudaMemcpyHostToDevice), "pool");
    std::vector<int32_t> perm(seqs);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    cuda_check(cudaMemcpy(idx.ptr, perm.data(), idx.bytes, cudaMemcpyHostToDevice), "idx");
  }
  gdn::cuda::DecodeShape s;
  s.num_seqs = seqs, s.tokens = 1, s.H = H, s.HV = HV, s.pool_size = seqs, s.dtype = DType::bf16;
  gdn::cuda::DecodeArgs a;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.g = g.as<float>(), a.beta = beta.as<float>();
  a.state_pool = pool.as<float>(), a.state_indices = idx.as<int32_t>(), a.o = o.ptr;
  const double ms = event_median_ms([&] { status_check(gdn::cuda::decode(s, a, nullptr)); }, 10, 200);
  // The same step after triton's flush (memset: the L2 left dirty), and a copy of the same bytes
  // after each flush, to tell what the kernel costs from what any transfer of that size pays.
  const double dirty_ms =
      event_median_ms([&] { status_check(gdn::cuda::decode(s, a, nullptr)); }, 10, 200, L2Flush::dirty);
  const double copy_same_ms = copy_ms(pool.bytes), copy_same_dirty_ms = copy_ms(pool.bytes, L2Flush::dirty);
  gdn::cuda::DecodeShape sa = s;  // the additive rule on the same pool: no beta
  sa.update = gdn::cuda::Update::additive;
  gdn::cuda::DecodeArgs aa = a;
  aa.beta = nullptr;
  const double ams = event_median_ms([&] { status_check(gdn::cuda::decode(sa, aa, nullptr)); }, 10, 200);
  DeviceBuffer gv = random_f32(size_t(seqs) * HV * 128, rng, 0.7f, 0.99f, true);
  gdn::cuda::DecodeShape sk = s;  // KDA on the same pool: a log-gate per key dimension
  sk.gate = gdn::cuda::Gate::vector;
  gdn::cuda::DecodeArgs ak = a;
  ak.g = gv.as<float>();
  const double kms = event_median_ms([&] { status_check(gdn::cuda::decode(sk, ak, nullptr)); }, 10, 200);
  const double bytes = 2.0 * seqs * state * 4;
  const double frac = bytes / (ms * 1e-3) / copy_bw, afrac = bytes / (ams * 1e-3) / copy_bw,
               kfrac = bytes / (kms * 1e-3) / copy_bw;
  std::printf("decode seqs=%d: %.2f us, %.1f%% of copy bandwidth; additive %.2f us, %.1f%%; kda %.2f us, %.1f%%\n",
              seqs, ms * 1e3, 100 * frac, ams * 1e3, 100 * afrac, kms * 1e3, 100 * kfrac);
  std::printf("  same bytes copied: %.2f us; after a memset flush (L2 dirty): decode %.2f us (%.1f%%), copy %.2f us\n",
              copy_same_ms * 1e3, dirty_ms * 1e3, 100 * bytes / (dirty_ms * 1e-3) / copy_bw, copy_same_dirty_ms * 1e3);
  return {{"seqs", seqs}, {"HV", HV}, {"D", 128}, {"decode_us", ms * 1e3}, {"decode_bw_fraction", frac},
          {"copy_same_bytes_us", copy_same_ms * 1e3}, {"decode_us_dirty_l2", dirty_ms * 1e3},
          {"decode_bw_fraction_dirty_l2", bytes / (dirty_ms * 1e-3) / copy_bw},
          {"copy_same_bytes_us_dirty_l2", copy_same_dirty_ms * 1e3},
          {"additive_decode_us", ams * 1e3}, {"additive_decode_bw_fraction", afrac}, {"kda_decode_us", kms * 1e3},
          {"kda_decode_bw_fraction", kfrac}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: gdn_gpu_bench OUT.json [--quick | --profile]\n");
    return 2;
  }
  const std::string mode = argc > 2 ? argv[2] : "";
  const bool quick = mode == "--quick";
  try {
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0), "device");
    std::mt19937 rng(std::random_device{}());
    if (mode == "--profile") {  // one pass of each kernel on the three shapes, for ncu
      bench_chunk(8, 2048, 16, 16, rng, 0);
      bench_chunk(2, 8192, 16, 16, rng, 0);
      bench_chunk(4, 4096, 16, 32, rng, 0);
      return 0;
    }
    nlohmann::json out;
    out["gpu"] = prop.name;
    out["gdn_commit"] = GDN_BUILD_COMMIT;
    const double bw = gdn::cuda::copy_bandwidth();
    out["copy_bandwidth_bytes_per_s"] = bw;
    std::printf("%s: copy bandwidth %.2f TB/s\n", prop.name, bw / 1e12);
    struct Shape { int B, T, H, HV; };
    std::vector<Shape> shapes = {{8, 2048, 16, 16}, {2, 8192, 16, 16}, {4, 4096, 16, 32}};
    for (const Shape& sh : shapes) out["rows"].push_back(bench_chunk(sh.B, sh.T, sh.H, sh.HV, rng, quick ? 5 : 20));
    for (int n : {1, 32, 256, 1024}) out["decode"].push_back(bench_decode(n, bw, rng));
    std::ofstream(argv[1]) << out.dump(2) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn_gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
