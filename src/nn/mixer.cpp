#include "gdn/nn/mixer.h"

namespace gdn::nn {

template <class T>
std::unique_ptr<Mixer<T>> make_mixer(const ModelConfig& cfg, int layer, Rng& rng, double out_std) {
  const std::string& name = cfg.mixer(layer);
  if (name == "attention") return std::make_unique<Attention<T>>(cfg, 0, rng, out_std);
  if (name == "swa") return std::make_unique<Attention<T>>(cfg, cfg.window, rng, out_std);
  return std::make_unique<DeltaMixer<T>>(cfg, parse_variant(name), rng, out_std);
}

template std::unique_ptr<Mixer<float>> make_mixer(const ModelConfig&, int, Rng&, double);
template std::unique_ptr<Mixer<double>> make_mixer(const ModelConfig&, int, Rng&, double);

}  // namespace gdn::nn
