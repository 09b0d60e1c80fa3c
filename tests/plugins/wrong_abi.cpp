// A plugin as one built against the headers of another attnbench ABI version would behave: its
// entry point (ATTNBENCH_PLUGIN's run_entry, with that other version) reports the version it was
// built against and registers nothing.
#include "attention/plugin.h"

extern "C" __attribute__((visibility("default"))) int attnbench_plugin_register(
    attnbench_plugin_context* ctx) {
  ctx->plugin_abi_version = ATTNBENCH_ABI_VERSION + 1;
  return ATTNBENCH_PLUGIN_ABI_MISMATCH;
}
