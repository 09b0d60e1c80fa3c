// A plugin that needs a symbol no library provides (as one built against other headers might):
// dlopen with RTLD_NOW must refuse it with dlerror's reason.
#include "attention/plugin.h"

extern "C" void attnbench_symbol_nobody_defines();

namespace {
void register_nothing() {
  attnbench_symbol_nobody_defines();
}
}  // namespace

ATTNBENCH_PLUGIN(register_nothing)
