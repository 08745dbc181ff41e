// What `gdn train`, `gdn eval` and `gdn demo` share: a run description from a JSON file
// ({"model": {...}, "train": {...}, "data": {...}}) with command-line overrides.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "gdn/nn/config.h"
#include "gdn/train/data.h"
#include "gdn/train/trainer.h"

namespace gdn::cli {

struct RunSpec {
  nn::ModelConfig model;
  train::TrainConfig train;
  nlohmann::json data = {{"task", "mqar"}};  // a task spec, or {"train_file":..., "eval_file":...}
  int64_t train_examples = 20000, eval_examples = 1000;
  uint64_t data_seed = 0;

  // Reads FILE (empty: defaults). Throws gdn::Error naming the file and the field.
  static RunSpec load(const std::string& path);
  // Training and evaluation sets (generated, or loaded from the files). train_set() checks
  // that the task suits `model` (check_data_fits_model).
  train::Dataset train_set() const;
  train::Dataset eval_set() const;
};

// Throws gdn::Error when a generated task and the model's head do not belong together:
// mad_compression needs the autoencoder head, which no other task uses.
void check_data_fits_model(const nlohmann::json& data, const nn::ModelConfig& model);

// Sets the OpenMP and OpenBLAS thread counts; 0 means 1. Threads inside the layers of the
// small models trained here spin at every barrier rather than help (measured: 60k vs 2k
// tokens/s on a busy 2-core host); gdn train gives such models a replica per thread.
void set_threads(int n);

}  // namespace gdn::cli
