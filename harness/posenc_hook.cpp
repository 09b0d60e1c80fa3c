#include "harness/posenc_hook.h"

#include <algorithm>

#include "attention/positional/positional.h"

namespace attnbench {

// The encoding's tables are model parameters, not inputs: they use a fixed seed (0) so that
// every input seed and variant of a sweep sees the same encoding.
void apply_posenc(const std::string& spec, Inputs& in) {
  if (spec.empty()) return;
  auto enc = attn::positional::make_encoding(spec);
  enc->init(std::max(in.q.seq(), in.k.seq()), in.q.dim(), 0);
  enc->add_to(in.q);
  enc->add_to(in.k);
}

}  // namespace attnbench
