// Out-of-tree variants loaded at run time (docs/DESIGN.md §Plugins). A plugin is a shared
// library built against the installed attnbench package that defines its entry point with
//
//   void register_my_variants() { attn::register_variant({...}); }
//   ATTNBENCH_PLUGIN(register_my_variants)
//
// and is loaded with `attnbench --plugin PATH.so`, ATTNBENCH_PLUGINS=PATH:PATH or, from Python,
// attnbench.load_plugin(PATH).
#pragma once

#include <cstdio>
#include <exception>
#include <string>

#include "attention/registry.h"
#include "attention/version.h"

extern "C" {

// What the loader hands the entry point. The two version fields come first and never move, so
// a loader and a plugin of different ABI versions can still tell each other theirs.
struct attnbench_plugin_context {
  int host_abi_version;    // the loader's ATTNBENCH_ABI_VERSION
  int plugin_abi_version;  // set by the entry point: the ABI the plugin was built against
  char error[512];         // set by the entry point when registration failed
};

// The entry point: returns 0 when its variants are registered, ATTNBENCH_PLUGIN_ABI_MISMATCH
// without touching the registry when the versions differ, ATTNBENCH_PLUGIN_FAILED (with
// `error` filled) when registering threw.
typedef int (*attnbench_plugin_register_fn)(attnbench_plugin_context*);
}

#define ATTNBENCH_PLUGIN_ENTRY "attnbench_plugin_register"
#define ATTNBENCH_PLUGIN_ABI_MISMATCH 1
#define ATTNBENCH_PLUGIN_FAILED 2

namespace attn::plugin {

// The body of every entry point. Compiled into the plugin, so ATTNBENCH_ABI_VERSION here is
// the one of the headers the plugin was built against. No exception leaves it: the loader may
// have been built by another compiler, and C entry points must not throw.
inline int run_entry(attnbench_plugin_context* ctx, void (*register_variants)()) noexcept {
  ctx->plugin_abi_version = ATTNBENCH_ABI_VERSION;
  if (ctx->host_abi_version != ATTNBENCH_ABI_VERSION) return ATTNBENCH_PLUGIN_ABI_MISMATCH;
  try {
    register_variants();
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(ctx->error, sizeof ctx->error, "%s", e.what());
  } catch (...) {
    std::snprintf(ctx->error, sizeof ctx->error, "registration threw a non-standard exception");
  }
  return ATTNBENCH_PLUGIN_FAILED;
}

}  // namespace attn::plugin

// Defines the plugin's entry point around `register_function` (a void() that registers the
// plugin's variants with attn::register_variant).
#define ATTNBENCH_PLUGIN(register_function)                                        \
  extern "C" __attribute__((visibility("default"))) int attnbench_plugin_register( \
      attnbench_plugin_context* ctx) {                                             \
    return attn::plugin::run_entry(ctx, register_function);                        \
  }

namespace attn {

// Loads the plugin at `path` (a file path; one without a slash is taken relative to the
// working directory) and registers its variants, all or none. Loading the same file again does
// nothing. UsageError "plugin PATH: what is wrong" when the file is missing or cannot be loaded
// (dlerror's reason), exports no entry point, was built against another ABI version, or its
// registration fails (e.g. a variant name that is already registered). A loaded plugin is
// never unloaded: its variants' code must stay mapped for the life of the process.
void load_plugin(const std::string& path);
// Loads every plugin named in the environment variable ATTNBENCH_PLUGINS (paths separated by
// ':', empty entries skipped), in order.
void load_plugins_from_env();

}  // namespace attn
