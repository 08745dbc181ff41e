// The family table (DESIGN.md §2) and the option parsers.
#include <cmath>

#include "gdn/common.h"
#include "gdn/ops.h"

namespace gdn {

const std::vector<VariantInfo>& all_variants() {
  static const std::vector<VariantInfo> table = {
      {Variant::linear_attention, "linear_attention", GateKind::none, false, false},
      {Variant::retnet, "retnet", GateKind::fixed, false, false},
      {Variant::mamba2, "mamba2", GateKind::scalar, false, false},
      {Variant::gla, "gla", GateKind::vector, false, false},
      {Variant::deltanet, "deltanet", GateKind::none, true, false},
      {Variant::gated_deltanet, "gated_deltanet", GateKind::scalar, true, false},
      {Variant::kda, "kda", GateKind::vector, true, false},
      {Variant::longhorn, "longhorn", GateKind::none, true, true},
  };
  return table;
}

const VariantInfo& variant_info(Variant v) { return all_variants().at(size_t(v)); }

Variant parse_variant(std::string_view name) {
  std::string known;
  for (const auto& info : all_variants()) {
    if (name == info.name) return info.variant;
    known += known.empty() ? "" : ", ";
    known += info.name;
  }
  fail("unknown variant '", name, "'; expected one of: ", known);
}

Form parse_form(std::string_view name) {
  for (Form f : {Form::reference, Form::recurrent, Form::chunk})
    if (name == form_name(f)) return f;
  fail("unknown form '", name, "'; expected one of: reference, recurrent, chunk");
}

const char* form_name(Form f) {
  switch (f) {
    case Form::reference: return "reference";
    case Form::recurrent: return "recurrent";
    case Form::chunk: return "chunk";
  }
  return "?";
}

double OpConfig::effective_scale() const { return scale > 0 ? scale : 1 / std::sqrt(double(K)); }

size_t OpConfig::g_numel() const {
  switch (info().gate) {
    case GateKind::none: return 0;
    case GateKind::fixed:
    case GateKind::scalar: return size_t(B) * T * HV;
    case GateKind::vector: return size_t(B) * T * HV * K;
  }
  return 0;
}

}  // namespace gdn
