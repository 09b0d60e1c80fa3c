// A plugin whose second variant takes a built-in name: loading it must fail and leave the
// registry without its first variant (all or none).
#include <memory>

#include "attention/plugin.h"

namespace {

attn::VariantInfo copy_of_full(const std::string& name) {
  attn::VariantInfo info = attn::find_variant("full");
  info.name = name;
  return info;
}

void register_duplicate() {
  attn::register_variant(copy_of_full("plugin_first_of_two"));
  attn::register_variant(copy_of_full("full"));  // already registered
}

}  // namespace

ATTNBENCH_PLUGIN(register_duplicate)
