// The fp32 chunkwise form: against the fp64 reference over every member, chunk size, odd
// shape and extreme gate; against the fp32 recurrent form at T = 4096 (forward and every
// gradient) and T = 65536 (forward drift). The timing harness at the end is disabled
// (run it with --gtest_also_run_disabled_tests --gtest_filter='*Timing*').
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>

#include <cblas.h>

#include "gdn/flops.h"
#include "op_test_util.h"

namespace gdn::test {
namespace {

struct Shape {
  int B, T, H, HV, K, V;
  std::vector<int32_t> cu_seqlens;
};

// Each shape runs at every chunk size.
const std::vector<Shape>& chunk_shapes() {
  static const std::vector<Shape> shapes = {
      {2, 1, 2, 2, 16, 16, {}},                        // T = 1
      {1, 63, 2, 4, 32, 16, {}},                       // GVA 2x, K != V, T < 64
      {2, 65, 1, 4, 100, 24, {}},                      // K = 100, GVA 4x, one token past a chunk
      {1, 100, 2, 2, 16, 32, {0, 1, 2, 40, 41, 100}},  // varlen with sequences of length 1
      {1, 150, 1, 1, 64, 64, {}},                      // several chunks, partial last one
  };
  return shapes;
}

class ChunkVsReference : public ::testing::TestWithParam<Variant> {};

TEST_P(ChunkVsReference, ShapesGatesChunkSizes) {
  const uint64_t seed = fresh_seed();
  for (const Shape& s : chunk_shapes()) {
    for (int chunk : {16, 32, 64}) {
      OpConfig c = config(GetParam(), s.B, s.T, s.H, s.HV, s.K, s.V);
      c.cu_seqlens = s.cu_seqlens;
      c.chunk_size = chunk;
      for (GateMode m : {GateMode::random, GateMode::zero, GateMode::very_negative, GateMode::mixed}) {
        if (c.info().gate == GateKind::none && m != GateMode::random) continue;
        for (bool h0 : {true, false}) {
          const Problem p = make_problem(c, seed + s.T + int(m) + chunk, m, h0, h0);
          expect_close(run_form(Form::chunk, p), run_reference(p), 1e-5, 1e-4, describe(p, seed, m));
        }
      }
    }
  }
}

TEST_P(ChunkVsReference, FixedSeedsNoL2NormScale) {
  for (uint64_t seed : {uint64_t(1), uint64_t(2024)}) {
    OpConfig c = config(GetParam(), 2, 77, 2, 4, 24, 40);
    c.l2norm_qk = false;
    c.scale = 0.3f;
    c.chunk_size = 32;
    Problem p = make_problem(c, seed, GateMode::mixed);
    // Unnormalised keys with |k|^2 ~ 1.4: beta |k|^2 up to ~2.8 (the transition's eigenvalue
    // reaches -1.8), so A = (I + Diag(beta) N)^-1 is far from I, while a short sequence
    // stays finite.
    for (double& x : p.k) x *= 1.2 / std::sqrt(double(c.K));
    expect_close(run_form(Form::chunk, p), run_reference(p), 1e-5, 1e-4, describe(p, seed, GateMode::mixed));
  }
}

std::string variant_name(const ::testing::TestParamInfo<Variant>& info) { return variant_info(info.param).name; }

INSTANTIATE_TEST_SUITE_P(Chunk, ChunkVsReference,
                         ::testing::Values(Variant::linear_attention, Variant::retnet, Variant::mamba2, Variant::gla,
                                           Variant::deltanet, Variant::gated_deltanet, Variant::kda,
                                           Variant::longhorn),
                         variant_name);

// The brief's accuracy bar at the benchmark's length: chunk vs recurrent at T = 4096.
TEST(ChunkVsRecurrent, GatedDeltaNetT4096) {
  const uint64_t seed = fresh_seed();
  for (Variant v : {Variant::gated_deltanet, Variant::kda}) {
    OpConfig c = config(v, 1, 4096, 2, 4, 64, 64);
    const Problem p = make_problem(c, seed, GateMode::random);
    expect_close(run_form(Form::chunk, p), run_form(Form::recurrent, p), 1e-5, 1e-4, describe(p, seed, GateMode::random));
  }
}

// Long sequences: the chunk form must not drift from the recurrence.
TEST(ChunkVsRecurrent, NoDriftAtT65536) {
  const uint64_t seed = fresh_seed();
  OpConfig c = config(Variant::gated_deltanet, 1, 65536, 1, 1, 32, 32);
  const Problem p = make_problem(c, seed, GateMode::random);
  expect_close(run_form(Form::chunk, p, false), run_form(Form::recurrent, p, false), 1e-5, 0,
               describe(p, seed, GateMode::random));
}

// ---------------------------------------------------------------------------------------
// Timing harness (not a test): Gated DeltaNet at B=1, T=4096, H=16, K=V=128, fp32, against
// OpenBLAS sgemm measured in the same run. Medians of GDN_TIMING_REPEATS (default 7).

double median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Median wall seconds and median process CPU seconds per thread (the latter is what a
// quiet machine's wall time would be when other jobs share the cores).
struct Timing {
  double wall, cpu;
};

template <class Fn>
Timing median_seconds(int repeats, int threads, Fn&& fn) {
  fn();  // warm-up
  std::vector<double> wall, cpu;
  for (int r = 0; r < repeats; ++r) {
    const double c0 = process_cpu_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    cpu.push_back((process_cpu_seconds() - c0) / threads);
  }
  return {median(wall), median(cpu)};
}

TEST(DISABLED_ChunkTiming, GatedDeltaNetT4096) {
  const int repeats = std::getenv("GDN_TIMING_REPEATS") ? std::atoi(std::getenv("GDN_TIMING_REPEATS")) : 7;
  const int threads = omp_get_max_threads();
  openblas_set_num_threads(threads);
  const int n = 2048;
  std::vector<float> a(size_t(n) * n, 0.5f), b(size_t(n) * n, 0.25f), cm(size_t(n) * n);
  const Timing sgemm = median_seconds(repeats, threads, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, cm.data(), n);
  });
  const double sgemm_flops = 2.0 * n * n * n;

  OpConfig c = config(Variant::gated_deltanet, 1, 4096, 16, 16, 128, 128);
  const Problem p = make_problem(c, 1, GateMode::random);
  const auto q = to_f32(p.q), k = to_f32(p.k), v = to_f32(p.v), g = to_f32(p.g), beta = to_f32(p.beta),
             d_o = to_f32(p.d_o);
  const OpInputs<float> in = p.inputs(q, k, v, g, beta, std::vector<float>{});
  std::vector<float> o(p.v_numel()), dq(q.size()), dk(k.size()), dv(v.size()), dg(g.size()), dbeta(beta.size());
  const Timing fwd = median_seconds(repeats, threads, [&] { forward(Form::chunk, c, in, {o.data(), nullptr}); });
  const Timing bwd = median_seconds(repeats, threads, [&] {
    backward(Form::chunk, c, in, {d_o.data(), nullptr}, {dq.data(), dk.data(), dv.data(), dg.data(), dbeta.data()});
  });
  const Timing rec = median_seconds(std::max(1, repeats / 2), threads,
                                    [&] { forward(Form::recurrent, c, in, {o.data(), nullptr}); });
  const double fwd_flops = chunk_forward_flops(c), bwd_flops = chunk_backward_flops(c);
  auto line = [&](const char* what, double flops, double wall, double cpu, double sg_wall, double sg_cpu) {
    std::printf("%-15s %8.1f ms %7.1f GFLOP/s %4.0f%% of sgemm | per-thread CPU time: %8.1f ms %7.1f GFLOP/s %4.0f%%\n",
                what, wall * 1e3, flops / wall * 1e-9, 100 * flops / wall / (sgemm_flops / sg_wall), cpu * 1e3,
                flops / cpu * 1e-9, 100 * flops / cpu / (sgemm_flops / sg_cpu));
  };
  std::printf("threads %d; chunk forward %.2f GFLOP, backward %.2f GFLOP\n", threads, fwd_flops * 1e-9,
              bwd_flops * 1e-9);
  line("sgemm 2048^3", sgemm_flops, sgemm.wall, sgemm.cpu, sgemm.wall, sgemm.cpu);
  line("chunk fwd", fwd_flops, fwd.wall, fwd.cpu, sgemm.wall, sgemm.cpu);
  line("chunk bwd", bwd_flops, bwd.wall, bwd.cpu, sgemm.wall, sgemm.cpu);
  line("chunk fwd+bwd", fwd_flops + bwd_flops, fwd.wall + bwd.wall, fwd.cpu + bwd.cpu, sgemm.wall, sgemm.cpu);
  std::printf("recurrent fwd   %8.1f ms (chunk forward is %.2fx faster) | CPU time %.1f ms\n", rec.wall * 1e3,
              rec.wall / fwd.wall, rec.cpu * 1e3);
}

}  // namespace
}  // namespace gdn::test
