#include "harness/posenc_hook.h"

namespace attnbench {

// Positional encodings arrive with attention/positional/ (issue 7); until then only the
// empty spec is valid.
void apply_posenc(const std::string& spec, Inputs&) {
  if (!spec.empty())
    throw attn::UsageError("unknown positional encoding '" + spec + "'; none are available yet");
}

}  // namespace attnbench
