// Strict reading of JSON configs: a misspelt field is an error, not a silent default, and a
// field of the wrong type says which one it is.
#pragma once

#include <initializer_list>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gdn/common.h"

namespace gdn {

class JsonFields {
 public:
  // `what` names the object in messages: "model config", "task mqar", ...; `shared` are
  // fields every object of its kind may carry (a task's "task", "seed", ...).
  JsonFields(const nlohmann::json& j, std::string what, std::initializer_list<const char*> shared = {})
      : j_(j), what_(std::move(what)), shared_(shared) {}

  // Throws for a key that is neither in `known` nor shared.
  void allow_only(std::initializer_list<const char*> known) const {
    for (const auto& [key, value] : j_.items()) {
      bool ok = false;
      for (const char* k : known) ok = ok || key == k;
      for (const char* k : shared_) ok = ok || key == k;
      GDN_CHECK(ok, what_, ": unknown field \"", key, "\"");
    }
  }

  // Leaves `out` (its default) when the field is absent.
  template <class V>
  void read(const char* key, V& out) const {
    if (!j_.contains(key)) return;
    try {
      out = j_.at(key).get<V>();
    } catch (const nlohmann::json::exception& e) {
      fail(what_, ": field \"", key, "\" has the wrong type (", j_.at(key).dump(), ")");
    }
  }

 private:
  const nlohmann::json& j_;
  std::string what_;
  std::vector<const char*> shared_;
};

}  // namespace gdn
