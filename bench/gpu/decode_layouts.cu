// gdn_decode_layouts: the decode kernel's thread layouts <columns per block, rows per thread>
// side by side, timed like gdn_gpu_bench (event_median_ms, beside the same run's copy
// bandwidth) and checked against the layout gdn::cuda::decode launches on the same inputs and
// states (the pool is restored before each run), for the delta rule. The record is
// bench/gpu/NOTES.md, decode v4.
//   gdn_decode_layouts [reps]     (exit 1 when a layout disagrees)
#include "../../src/ops/cuda/decode.cu"
#include "../../src/ops/cuda/timing.h"

#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

namespace {

using namespace gdn::cuda;

struct Layout {
  const char* name;
  std::function<Status(const DecodeShape&, const DecodeArgs&, float)> launch;
};

template <class T, int kCols, int kRows>
Layout layout(const char* name) {
  return {name, [](const DecodeShape& s, const DecodeArgs& a, float scale) {
            return detail::launch_decode<T, Update::delta, Gate::scalar, kCols, kRows>(s, a, scale, nullptr);
          }};
}

double rel_err(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(x[i]) - ref[i];
    num += d * d, den += double(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);  // NaN when x has one
}

DeviceBuffer upload_as(const std::vector<float>& x, bool bf16) {
  if (!bf16) return upload_vector(x);
  std::vector<uint16_t> bits(x.size());
  for (size_t i = 0; i < x.size(); ++i) bits[i] = bf16_bits(x[i]);
  return upload_vector(bits);
}

std::vector<float> download_as(const DeviceBuffer& b, size_t n, bool bf16) {
  if (!bf16) return download_vector<float>(b, n);
  const std::vector<uint16_t> bits = download_vector<uint16_t>(b, n);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = bf16_value(bits[i]);
  return x;
}

// One token (or a few) for `seqs` sequences, H = 16, HV = 32, states in shuffled pool slots.
// Returns false when a layout disagrees with the first.
template <class T>
bool run(int seqs, int tokens, double copy_bw, int reps, std::mt19937& rng, bool timed) {
  constexpr bool bf = std::is_same_v<T, __nv_bfloat16>;
  const int H = 16, HV = 32, D = 128;
  const size_t state = size_t(HV) * D * D, pool_n = size_t(seqs) * state, on = size_t(seqs) * tokens * HV * D;
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> u01(0, 1);
  auto normals = [&](size_t n) {
    std::vector<float> x(n);
    for (auto& e : x) e = normal(rng);
    return x;
  };
  std::vector<float> g(size_t(seqs) * tokens * HV), beta(g.size()), pool(pool_n);
  for (auto& e : g) e = std::log(0.7f + 0.29f * u01(rng));
  for (auto& e : beta) e = 0.05f + 0.9f * u01(rng);
  for (auto& e : pool) e = 0.1f * (2 * u01(rng) - 1);
  std::vector<int32_t> slots(seqs);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  DeviceBuffer q = upload_as(normals(size_t(seqs) * tokens * H * D), bf),
               k = upload_as(normals(size_t(seqs) * tokens * H * D), bf),
               v = upload_as(normals(size_t(seqs) * tokens * HV * D), bf), dg = upload_vector(g),
               db = upload_vector(beta), pool0 = upload_vector(pool), dpool(pool_n * 4), idx = upload_vector(slots),
               o(on * sizeof(T));
  DecodeShape s;
  s.num_seqs = seqs, s.tokens = tokens, s.H = H, s.HV = HV, s.pool_size = seqs, s.dtype = bf ? DType::bf16 : DType::f32;
  DecodeArgs a;
  a.q = q.ptr, a.k = k.ptr, a.v = v.ptr, a.g = dg.as<float>(), a.beta = db.as<float>();
  a.state_pool = dpool.as<float>(), a.state_indices = idx.as<int32_t>(), a.o = o.ptr;
  const float scale = 1.f / std::sqrt(float(D));

  // The first layout is the one gdn::cuda::decode launches; the others are checked against it.
  const std::vector<Layout> layouts = {
      layout<T, detail::kDecodeCols, detail::kDecodeRows>("gdn::cuda::decode's"),
      layout<T, 128, 8>("128 cols x 8 rows (512 thr)"),   layout<T, 128, 16>("128 cols x 16 rows (256 thr)"),
      layout<T, 128, 4>("128 cols x 4 rows (1024 thr)"),  layout<T, 64, 16>("64 cols x 16 rows (128 thr)"),
      layout<T, 32, 4>("32 cols x 4 rows (256 thr)")};
  std::vector<float> o_ref, s_ref;
  bool ok = true;
  for (const Layout& l : layouts) {
    cuda_check(cudaMemcpy(dpool.ptr, pool0.ptr, dpool.bytes, cudaMemcpyDeviceToDevice), "restore pool");
    o.poison();
    status_check(l.launch(s, a, scale));
    cuda_check(cudaDeviceSynchronize(), l.name);
    std::vector<float> out = download_as(o, on, bf), st = download_vector<float>(dpool, pool_n);
    double eo = 0, es = 0;
    if (o_ref.empty())
      o_ref = std::move(out), s_ref = std::move(st);
    else
      eo = rel_err(out, o_ref), es = rel_err(st, s_ref);
    double us = 0;
    if (timed) us = 1e3 * event_median_ms([&] { status_check(l.launch(s, a, scale)); }, 10, reps);
    const double frac = us > 0 ? 2.0 * pool_n * 4 / (us * 1e-6) / copy_bw : 0;
    const bool agrees = eo <= (bf ? 1e-2 : 1e-5) && es <= 1e-5;
    ok = ok && agrees;
    std::printf("%s seqs=%-5d tokens=%d %-30s %8.2f us %6.1f%% of copy   vs first: o %.1e state %.1e%s\n",
                bf ? "bf16" : "fp32", seqs, tokens, l.name, us, 100 * frac, eo, es, agrees ? "" : "  DISAGREES");
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 200;
  try {
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    const double bw = copy_bandwidth();
    std::printf("%s, %d SMs: copy bandwidth %.3f TB/s (read + written)\n", prop.name, prop.multiProcessorCount,
                bw / 1e12);
    std::mt19937 rng(std::random_device{}());
    bool ok = run<float>(8, 3, bw, reps, rng, false);  // agreement only: fp32, 3 tokens
    for (int n : {1, 32, 256, 1024}) ok = run<__nv_bfloat16>(n, 1, bw, reps, rng, true) && ok;
    ok = run<float>(256, 1, bw, reps, rng, true) && ok;
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn_decode_layouts: %s\n", e.what());
    return 1;
  }
}
