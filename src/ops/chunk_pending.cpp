// Placeholder until the chunkwise CPU form lands from its branch; removed by that merge.
#include "gdn/common.h"
#include "ops/core.h"

namespace gdn::detail {
void chunk_core_forward(const CoreProblem<float>&, const CoreOutputs<float>&) {
  fail("the chunk form is not built in this revision");
}
void chunk_core_backward(const CoreProblem<float>&, const CoreGradOutputs<float>&, const CoreGrads<float>&) {
  fail("the chunk form is not built in this revision");
}
}  // namespace gdn::detail
