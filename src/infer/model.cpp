// Forward with a decode state. The same code runs a prefill (n tokens, chunkwise op) and a
// decode step (one token, recurrent op); both continue from the state and update it.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "gdn/common.h"
#include "gdn/nn/activations.h"
#include "gdn/nn/rope.h"
#include "infer/model_impl.h"

namespace gdn::infer {

constexpr int kSmallBatch = 16;      // tokens per forward below which one thread does the work
constexpr int kPrefillPiece = 4096;  // longest piece of a prompt run at once

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::gdn:
      return "gdn";
    case Layout::fla:
      return "fla";
    case Layout::qwen3_next:
      return "qwen3_next";
  }
  return "?";
}

void Config::validate() const {
  GDN_CHECK(vocab > 0 && d_model > 0, "model config: vocab (", vocab, ") and d_model (", d_model, ") must be positive");
  GDN_CHECK(!attention.empty() && window.size() == attention.size(), "model config: no layers");
  GDN_CHECK(mlp_hidden >= 0, "model config: mlp_hidden ", mlp_hidden, " < 0");
  bool any_delta = false, any_attn = false;
  for (size_t i = 0; i < attention.size(); ++i) (attention[i] ? any_attn : any_delta) = true;
  if (any_delta) {
    GDN_CHECK(heads > 0 && v_heads > 0 && head_k > 0 && head_v > 0, "model config: gated delta heads (", heads, ", v ",
              v_heads, ") and head dims (", head_k, ", ", head_v, ") must be positive");
    GDN_CHECK(v_heads % heads == 0, "model config: value heads ", v_heads, " not a multiple of heads ", heads);
    GDN_CHECK(conv_size >= 1, "model config: conv_size ", conv_size, " < 1");
  }
  if (any_attn) {
    GDN_CHECK(attn_heads > 0 && attn_kv_heads > 0 && attn_head_dim > 0, "model config: attention heads (", attn_heads,
              ", kv ", attn_kv_heads, ") and head_dim (", attn_head_dim, ") must be positive");
    GDN_CHECK(attn_heads % attn_kv_heads == 0, "model config: attention heads ", attn_heads,
              " not a multiple of kv heads ", attn_kv_heads);
    GDN_CHECK(rotary_dim >= 0 && rotary_dim <= attn_head_dim && rotary_dim % 2 == 0, "model config: rotary dims ",
              rotary_dim, " must be even and <= head_dim ", attn_head_dim);
    GDN_CHECK(rope_theta > 0, "model config: rope_theta ", rope_theta, " must be positive");
  }
}

size_t State::bytes() const {
  size_t n = 0;
  for (const auto& l : layers)
    n += l.conv_q.size() + l.conv_k.size() + l.conv_v.size() + l.recurrent.size() + l.keys.size() + l.values.size();
  return n * sizeof(float);
}

namespace {

void shape_linear(nn::Linear<float>& l, int in, int out) {
  l.in = in;
  l.out = out;
  l.weight.init({out, in}, true);
}
void shape_conv(nn::ShortConv<float>& c, int channels, int width) {
  c.channels = channels;
  c.width = width;
  c.activation = nn::ShortConv<float>::Activation::silu;
  c.weight.init({channels, 1, width}, true);
}
template <class Norm>
void shape_norm(Norm& n, int dim, double eps) {
  n.init(dim, eps);
}

// Causal depthwise conv continuing from `hist` (the last W-1 inputs, zeros at the start):
// runs the training layer over [hist | x] and keeps the last n outputs, then rolls hist.
void conv_step(nn::ShortConv<float>& conv, std::vector<float>& hist, const float* x, int n, float* y,
               std::vector<float>& scratch) {
  const int C = conv.channels, H = conv.width - 1;
  scratch.resize(size_t(H + n) * C);
  std::copy(hist.begin(), hist.end(), scratch.begin());
  std::copy_n(x, size_t(n) * C, scratch.begin() + size_t(H) * C);
  std::vector<float> out(scratch.size());
  conv.forward(scratch.data(), 1, H + n, out.data());
  std::copy_n(out.data() + size_t(H) * C, size_t(n) * C, y);
  std::copy_n(scratch.data() + size_t(n) * C, size_t(H) * C, hist.begin());
}

void delta_forward(const Config& cfg, DeltaLayer& L, State::Layer& st, const float* x, int n, float* y,
                   Form prefill_form) {
  const int H = cfg.heads, HV = cfg.v_heads, K = cfg.head_k, V = cfg.head_v;
  const size_t nk = size_t(n) * H * K, nv = size_t(n) * HV * V;
  std::vector<float> proj(std::max(nk, nv)), q(nk), k(nk), v(nv), scratch;
  L.q_proj.forward(x, n, proj.data());
  conv_step(L.q_conv1d, st.conv_q, proj.data(), n, q.data(), scratch);
  L.k_proj.forward(x, n, proj.data());
  conv_step(L.k_conv1d, st.conv_k, proj.data(), n, k.data(), scratch);
  L.v_proj.forward(x, n, proj.data());
  conv_step(L.v_conv1d, st.conv_v, proj.data(), n, v.data(), scratch);

  std::vector<float> g(size_t(n) * HV), beta(size_t(n) * HV);
  L.a_proj.forward(x, n, g.data());
  L.b_proj.forward(x, n, beta.data());
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < HV; ++h) {
      float& gi = g[size_t(t) * HV + h];
      gi = nn::log_decay(gi, L.A_log.value[h], L.dt_bias.value[h]);
      float& bi = beta[size_t(t) * HV + h];
      bi = nn::delta_beta(bi, cfg.allow_neg_eigval);
    }

  OpConfig op;
  op.variant = Variant::gated_deltanet;
  op.B = 1;
  op.T = n;
  op.H = H;
  op.HV = HV;
  op.K = K;
  op.V = V;
  op.l2norm_qk = true;
  std::vector<float> o(nv), ht(st.recurrent.size());
  forward(n > 1 ? prefill_form : Form::recurrent, op,
          OpInputs<float>{q.data(), k.data(), v.data(), g.data(), beta.data(), st.recurrent.data()},
          OpOutputs<float>{o.data(), ht.data()});
  st.recurrent.swap(ht);

  std::vector<float> z(nv);
  L.g_proj.forward(x, n, z.data());
  L.o_norm.forward(o.data(), z.data(), n * HV, o.data());
  L.o_proj.forward(o.data(), n, y);
}

void attention_forward(const Config& cfg, AttentionLayer& L, State::Layer& st, int64_t pos0, int window, const float* x,
                       int n, float* y) {
  const int H = cfg.attn_heads, KVH = cfg.attn_kv_heads, Dh = cfg.attn_head_dim;
  const size_t kv_row = size_t(KVH) * Dh;
  std::vector<float> q(size_t(n) * H * Dh), k(size_t(n) * kv_row), v(size_t(n) * kv_row);
  L.q_proj.forward(x, n, q.data());
  L.k_proj.forward(x, n, k.data());
  L.v_proj.forward(x, n, v.data());
  if (cfg.attn_qk_norm) {
    L.q_norm.forward(q.data(), n * H, q.data());
    L.k_norm.forward(k.data(), n * KVH, k.data());
  }
  nn::apply_rope(q.data(), 1, n, H, Dh, cfg.rotary_dim, cfg.rope_theta, pos0, false);
  nn::apply_rope(k.data(), 1, n, KVH, Dh, cfg.rotary_dim, cfg.rope_theta, pos0, false);
  st.keys.insert(st.keys.end(), k.begin(), k.end());
  st.values.insert(st.values.end(), v.begin(), v.end());

  // Token t (position pos0 + t) attends to positions [lo, pos0 + t] of the cache, where
  // lo is the window's start (the query's own token included in the window).
  const int64_t c0 = st.cache_start;
  const float scale = 1.f / std::sqrt(float(Dh));
  std::vector<float> o(size_t(n) * H * Dh);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < H; ++h) {
      const int64_t pos = pos0 + t;
      const int64_t lo = std::max(c0, window > 0 ? pos - window + 1 : int64_t(0));
      const int kvh = h / (H / KVH);
      const float* qr = q.data() + (size_t(t) * H + h) * Dh;
      std::vector<float> p(size_t(pos - lo + 1));
      float mx = -INFINITY;
      for (int64_t j = lo; j <= pos; ++j) {
        const float* kr = st.keys.data() + size_t(j - c0) * kv_row + size_t(kvh) * Dh;
        float s = 0.f;
        for (int d = 0; d < Dh; ++d) s += qr[d] * kr[d];
        p[size_t(j - lo)] = s * scale;
        mx = std::max(mx, s * scale);
      }
      float sum = 0.f;
      for (auto& e : p) sum += (e = std::exp(e - mx));
      float* orow = o.data() + (size_t(t) * H + h) * Dh;
      std::fill(orow, orow + Dh, 0.f);
      for (int64_t j = lo; j <= pos; ++j) {
        const float w = p[size_t(j - lo)] / sum;
        const float* vr = st.values.data() + size_t(j - c0) * kv_row + size_t(kvh) * Dh;
        for (int d = 0; d < Dh; ++d) orow[d] += w * vr[d];
      }
    }

  if (cfg.attn_out_gate) {
    std::vector<float> gate(o.size());
    L.gate_proj.forward(x, n, gate.data());
    for (size_t i = 0; i < o.size(); ++i) o[i] *= nn::sigmoid(gate[i]);
  }
  L.o_proj.forward(o.data(), n, y);

  // Sliding window: keep the last window - 1 positions (all a later query can see),
  // trimming only when twice that is held so that the copy is amortised.
  if (window > 0) {
    const int64_t held = int64_t(st.keys.size() / kv_row), keep = window - 1;
    if (held >= 2 * int64_t(window)) {
      const size_t drop = size_t(held - keep) * kv_row;
      st.keys.erase(st.keys.begin(), st.keys.begin() + drop);
      st.values.erase(st.values.begin(), st.values.begin() + drop);
      st.cache_start += held - keep;
    }
  }
}

}  // namespace

void Model::Impl::shape() {
  const Config& c = cfg;
  const int D = c.d_model;
  embeddings.vocab = c.vocab;
  embeddings.dim = D;
  embeddings.weight.init({c.vocab, D}, true);
  blocks.clear();
  blocks.resize(size_t(c.layers()));
  for (int i = 0; i < c.layers(); ++i) {
    Block& b = blocks[size_t(i)];
    shape_norm(b.attn_norm, D, c.norm_eps);
    if (c.attention[size_t(i)]) {
      AttentionLayer& a = b.attn;
      const int q = c.attn_heads * c.attn_head_dim, kv = c.attn_kv_heads * c.attn_head_dim;
      shape_linear(a.q_proj, D, q);
      shape_linear(a.k_proj, D, kv);
      shape_linear(a.v_proj, D, kv);
      shape_linear(a.o_proj, q, D);
      if (c.attn_out_gate) shape_linear(a.gate_proj, D, q);
      if (c.attn_qk_norm) {
        shape_norm(a.q_norm, c.attn_head_dim, c.norm_eps);
        shape_norm(a.k_norm, c.attn_head_dim, c.norm_eps);
      }
    } else {
      DeltaLayer& d = b.delta;
      const int key = c.heads * c.head_k, value = c.v_heads * c.head_v;
      shape_linear(d.q_proj, D, key);
      shape_linear(d.k_proj, D, key);
      shape_linear(d.v_proj, D, value);
      shape_linear(d.a_proj, D, c.v_heads);
      shape_linear(d.b_proj, D, c.v_heads);
      shape_linear(d.g_proj, D, value);
      shape_linear(d.o_proj, value, D);
      shape_conv(d.q_conv1d, key, c.conv_size);
      shape_conv(d.k_conv1d, key, c.conv_size);
      shape_conv(d.v_conv1d, value, c.conv_size);
      d.A_log.init({c.v_heads}, false);
      d.dt_bias.init({c.v_heads}, false);
      shape_norm(d.o_norm, c.head_v, c.norm_eps);
    }
    shape_norm(b.mlp_norm, D, c.norm_eps);
    if (c.mlp_hidden > 0) {
      b.mlp.dim = D;
      b.mlp.hidden = c.mlp_hidden;
      shape_linear(b.mlp.gate_proj, D, c.mlp_hidden);
      shape_linear(b.mlp.up_proj, D, c.mlp_hidden);
      shape_linear(b.mlp.down_proj, c.mlp_hidden, D);
    }
  }
  shape_norm(norm, D, c.norm_eps);
  shape_linear(lm_head, D, c.vocab);
}

void Model::Impl::finalize() {
  if (cfg.tie_embeddings) lm_head.weight.value = embeddings.weight.value;
  // Inference needs no gradients: free what Param::init allocated for them.
  for (auto& [name, p] : params()) std::vector<float>().swap(p->grad);
  std::vector<float>().swap(lm_head.weight.grad);
}

std::vector<std::pair<std::string, nn::Param<float>*>> Model::Impl::params() {
  std::vector<std::pair<std::string, nn::Param<float>*>> list;
  auto add = [&](const std::string& name, nn::Param<float>& p) { list.push_back({name, &p}); };
  add("model.embeddings.weight", embeddings.weight);
  for (int i = 0; i < cfg.layers(); ++i) {
    Block& b = blocks[size_t(i)];
    const std::string pre = cat("model.layers.", i, ".");
    add(pre + "attn_norm.weight", b.attn_norm.weight);
    if (cfg.attention[size_t(i)]) {
      AttentionLayer& a = b.attn;
      add(pre + "attn.q_proj.weight", a.q_proj.weight);
      add(pre + "attn.k_proj.weight", a.k_proj.weight);
      add(pre + "attn.v_proj.weight", a.v_proj.weight);
      add(pre + "attn.o_proj.weight", a.o_proj.weight);
      if (cfg.attn_out_gate) add(pre + "attn.gate_proj.weight", a.gate_proj.weight);
      if (cfg.attn_qk_norm) {
        add(pre + "attn.q_norm.weight", a.q_norm.weight);
        add(pre + "attn.k_norm.weight", a.k_norm.weight);
      }
    } else {
      DeltaLayer& d = b.delta;
      add(pre + "attn.q_proj.weight", d.q_proj.weight);
      add(pre + "attn.k_proj.weight", d.k_proj.weight);
      add(pre + "attn.v_proj.weight", d.v_proj.weight);
      add(pre + "attn.a_proj.weight", d.a_proj.weight);
      add(pre + "attn.b_proj.weight", d.b_proj.weight);
      add(pre + "attn.A_log", d.A_log);
      add(pre + "attn.dt_bias", d.dt_bias);
      add(pre + "attn.q_conv1d.weight", d.q_conv1d.weight);
      add(pre + "attn.k_conv1d.weight", d.k_conv1d.weight);
      add(pre + "attn.v_conv1d.weight", d.v_conv1d.weight);
      add(pre + "attn.g_proj.weight", d.g_proj.weight);
      add(pre + "attn.o_norm.weight", d.o_norm.weight);
      add(pre + "attn.o_proj.weight", d.o_proj.weight);
    }
    if (cfg.mlp_hidden > 0) {
      add(pre + "mlp_norm.weight", b.mlp_norm.weight);
      add(pre + "mlp.gate_proj.weight", b.mlp.gate_proj.weight);
      add(pre + "mlp.up_proj.weight", b.mlp.up_proj.weight);
      add(pre + "mlp.down_proj.weight", b.mlp.down_proj.weight);
    }
  }
  add("model.norm.weight", norm.weight);
  if (!cfg.tie_embeddings) add("lm_head.weight", lm_head.weight);
  return list;
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

const Config& Model::config() const { return impl_->cfg; }

size_t Model::num_params() const {
  size_t n = 0;
  for (auto& [name, p] : impl_->params()) n += p->numel();
  return n;
}

State Model::new_state() const {
  const Config& c = impl_->cfg;
  State s;
  s.layers.resize(size_t(c.layers()));
  for (int i = 0; i < c.layers(); ++i) {
    if (c.attention[size_t(i)]) continue;
    State::Layer& l = s.layers[size_t(i)];
    const size_t hist = size_t(c.conv_size - 1);
    l.conv_q.assign(hist * c.heads * c.head_k, 0.f);
    l.conv_k.assign(hist * c.heads * c.head_k, 0.f);
    l.conv_v.assign(hist * c.v_heads * c.head_v, 0.f);
    l.recurrent.assign(size_t(c.v_heads) * c.head_k * c.head_v, 0.f);
  }
  return s;
}

void Model::forward(State& state, const int32_t* ids, int n, float* last_logits, float* all_logits, Form prefill_form) {
  if (!all_logits && n > kPrefillPiece) {
    // Long prompts in pieces: the activations stay the size of a piece, and the state
    // carries each piece on to the next.
    for (int i = 0; i < n; i += kPrefillPiece) {
      const int m = std::min(kPrefillPiece, n - i);
      forward(state, ids + i, m, i + m == n ? last_logits : nullptr, nullptr, prefill_form);
    }
    return;
  }
  if (n > kSmallBatch) {
    impl_->run(state, ids, n, last_logits, all_logits, prefill_form);
    impl_->drop_buffers();
    return;
  }
  // A decode step (or a few tokens) is too small to share between threads: OpenMP regions
  // would cost more in synchronisation than they save (far more on a loaded machine), so
  // its regions run on this thread alone; BLAS keeps its own threads.
  struct OneThread {
    int saved = omp_get_max_threads();
    OneThread() { omp_set_num_threads(1); }
    ~OneThread() { omp_set_num_threads(saved); }
  } one_thread;
  impl_->run(state, ids, n, last_logits, all_logits, prefill_form);
}

// The training layers keep their last inputs for a backward that inference never runs;
// after a prefill those buffers are as large as the prompt. Rebuilding each layer around
// its parameters frees them.
void Model::Impl::drop_buffers() {
  auto renew_norm = [](auto& layer) {
    std::remove_reference_t<decltype(layer)> fresh;
    fresh.dim = layer.dim;
    fresh.eps = layer.eps;
    fresh.weight = std::move(layer.weight);
    layer = std::move(fresh);
  };
  auto renew_conv = [](nn::ShortConv<float>& layer) {
    nn::ShortConv<float> fresh;
    fresh.channels = layer.channels;
    fresh.width = layer.width;
    fresh.activation = layer.activation;
    fresh.weight = std::move(layer.weight);
    layer = std::move(fresh);
  };
  for (size_t i = 0; i < blocks.size(); ++i) {
    Block& b = blocks[i];
    renew_norm(b.attn_norm);
    renew_norm(b.mlp_norm);
    if (cfg.attention[i]) {
      if (cfg.attn_qk_norm) {
        renew_norm(b.attn.q_norm);
        renew_norm(b.attn.k_norm);
      }
    } else {
      renew_conv(b.delta.q_conv1d);
      renew_conv(b.delta.k_conv1d);
      renew_conv(b.delta.v_conv1d);
      renew_norm(b.delta.o_norm);
    }
    nn::SwiGLU<float> mlp;
    mlp.dim = b.mlp.dim;
    mlp.hidden = b.mlp.hidden;
    mlp.gate_proj = std::move(b.mlp.gate_proj);
    mlp.up_proj = std::move(b.mlp.up_proj);
    mlp.down_proj = std::move(b.mlp.down_proj);
    b.mlp = std::move(mlp);
  }
  renew_norm(norm);
}

void Model::Impl::run(State& state, const int32_t* ids, int n, float* last_logits, float* all_logits,
                      Form prefill_form) {
  Impl& m = *this;
  const Config& c = m.cfg;
  GDN_CHECK(n > 0, "forward: no tokens");
  GDN_CHECK(state.layers.size() == size_t(c.layers()), "forward: the state has ", state.layers.size(),
            " layers, the model ", c.layers());
  const int D = c.d_model;
  std::vector<float> x(size_t(n) * D), h(x.size()), mix(x.size());
  m.embeddings.forward(ids, n, x.data());
  for (int i = 0; i < c.layers(); ++i) {
    Block& b = m.blocks[size_t(i)];
    b.attn_norm.forward(x.data(), n, h.data());
    if (c.attention[size_t(i)])
      attention_forward(c, b.attn, state.layers[size_t(i)], state.position, c.window[size_t(i)], h.data(), n,
                        mix.data());
    else
      delta_forward(c, b.delta, state.layers[size_t(i)], h.data(), n, mix.data(), prefill_form);
    for (size_t j = 0; j < x.size(); ++j) x[j] += mix[j];
    if (c.mlp_hidden > 0) {
      b.mlp_norm.forward(x.data(), n, h.data());
      b.mlp.forward(h.data(), n, mix.data());
      for (size_t j = 0; j < x.size(); ++j) x[j] += mix[j];
    }
  }
  state.position += n;

  // The final norm and LM head only on the rows that are asked for.
  const int first = all_logits ? 0 : n - 1, rows = n - first;
  m.norm.forward(x.data() + size_t(first) * D, rows, h.data());
  if (all_logits) {
    m.lm_head.forward(h.data(), rows, all_logits);
    if (last_logits) std::copy_n(all_logits + size_t(n - 1) * c.vocab, c.vocab, last_logits);
  } else if (last_logits) {
    m.lm_head.forward(h.data(), 1, last_logits);
  }
}

}  // namespace gdn::infer
