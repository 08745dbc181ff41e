// Parameters, their FLA-style names, and the seeded random source of the nn layers.
//
// Every layer is a template on the scalar type: float is what trains, double is what the
// finite-difference gradient checks run (the op's double path is its fp64 reference).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gdn::nn {

// xoshiro256** seeded through splitmix64: the same stream on every platform and compiler
// (std::normal_distribution is not), so a seed means the same run everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  void reseed(uint64_t seed) {
    for (auto& w : s_) {
      seed += 0x9e3779b97f4a7c15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      w = z ^ (z >> 31);
    }
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  uint64_t below(uint64_t n) { return next() % n; }  // bias < n / 2^64: irrelevant here
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  // Serialises the stream state (checkpoints resume the exact stream).
  std::vector<uint64_t> state() const { return {s_[0], s_[1], s_[2], s_[3]}; }
  void set_state(const std::vector<uint64_t>& s) {
    for (int i = 0; i < 4; ++i) s_[i] = s.at(i);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

template <class T>
struct Param {
  std::vector<int64_t> shape;
  std::vector<T> value, grad;
  bool decay = true;  // AdamW weight decay applies (not to A_log, dt_bias, norms, biases)

  void init(std::vector<int64_t> s, bool weight_decay) {
    shape = std::move(s);
    size_t n = 1;
    for (auto d : shape) n *= size_t(d);
    value.assign(n, T(0));
    grad.assign(n, T(0));
    decay = weight_decay;
  }
  size_t numel() const { return value.size(); }
  void fill(T x) { value.assign(value.size(), x); }
  void normal(Rng& rng, double std) {
    for (auto& x : value) x = T(rng.normal() * std);
  }
  void uniform(Rng& rng, double lo, double hi) {
    for (auto& x : value) x = T(rng.uniform(lo, hi));
  }
};

// Full checkpoint names ("model.layers.0.attn.q_proj.weight") and their parameters, in a
// fixed order: the optimizer, the checkpoints and the gradient checks walk this list.
template <class T>
using ParamList = std::vector<std::pair<std::string, Param<T>*>>;

}  // namespace gdn::nn
