#include "cli/run_spec.h"

#include <cblas.h>
#include <omp.h>

#include <fstream>

#include "gdn/common.h"

namespace gdn::cli {

RunSpec RunSpec::load(const std::string& path) {
  RunSpec s;
  if (path.empty()) return s;
  std::ifstream f(path);
  GDN_CHECK(f.good(), "config ", path, ": cannot open the file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("config ", path, ": not valid JSON: ", e.what());
  }
  try {
    GDN_CHECK(j.is_object(), "expected a JSON object with model, train and data");
    for (const auto& [key, value] : j.items())
      GDN_CHECK(key == "model" || key == "train" || key == "data", "unknown section \"", key,
                "\" (expected model, train, data)");
    if (j.contains("model")) s.model = nn::ModelConfig::from_json(j["model"]);
    if (j.contains("train")) s.train = train::TrainConfig::from_json(j["train"]);
    if (j.contains("data")) {
      s.data = j["data"];
      GDN_CHECK(s.data.is_object(), "data: expected an object");
      s.train_examples = s.data.value("train_examples", s.train_examples);
      s.eval_examples = s.data.value("eval_examples", s.eval_examples);
      s.data_seed = s.data.value("seed", s.data_seed);
    }
  } catch (const Error& e) {
    fail("config ", path, ": ", e.what());
  } catch (const nlohmann::json::exception& e) {
    fail("config ", path, ": ", e.what());
  }
  return s;
}

void check_data_fits_model(const nlohmann::json& data, const nn::ModelConfig& model) {
  // A user's own files may hold either kind of labels; a generated task has one meaning.
  if (!data.contains("task")) return;
  const std::string task = data["task"].is_string() ? data["task"].get<std::string>() : "";
  // MAD scores compression with an auto-encoder that rebuilds the sequence from its last
  // position; a causal LM on these labels (= inputs) scores 100% by copying.
  GDN_CHECK(task != "mad_compression" || model.autoencoder(), "task mad_compression is MAD's auto-encoder task: ",
            "set \"head\": \"autoencoder\" in the model section (a causal LM on its labels, which equal the ",
            "inputs, scores 100% by copying)");
  GDN_CHECK(task == "mad_compression" || !model.autoencoder(), "the autoencoder head decodes the whole sequence ",
            "from its last position, which only MAD's compression task asks for; task ", task,
            " has next-token labels: use \"head\": \"lm\"");
}

train::Dataset RunSpec::train_set() const {
  check_data_fits_model(data, model);
  if (data.contains("train_file")) return train::load_token_file(data["train_file"].get<std::string>());
  return train::make_task(data, train_examples, data_seed, false);
}

train::Dataset RunSpec::eval_set() const {
  if (data.contains("eval_file")) return train::load_token_file(data["eval_file"].get<std::string>());
  GDN_CHECK(!data.contains("train_file"), "data: a train_file (--data) needs an eval_file (--eval-data) too");
  return train::make_task(data, eval_examples, data_seed, true);
}

void set_threads(int n) {
  if (n <= 0) n = 1;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

}  // namespace gdn::cli
