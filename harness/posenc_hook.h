// Adds a positional encoding to benchmark inputs before attention (`--posenc SPEC`).
#pragma once

#include <string>

#include "harness/inputs.h"

namespace attnbench {

// Adds the encoding named by `spec` (see `attnbench list`) to q and k in place; an empty
// spec does nothing. UsageError for an unknown or invalid spec.
void apply_posenc(const std::string& spec, Inputs& in);

}  // namespace attnbench
