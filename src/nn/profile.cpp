#include "gdn/nn/profile.h"

namespace gdn::nn {
Profile& profile() {
  static Profile p;
  return p;
}
}  // namespace gdn::nn
