// The plugin loader (attention/plugin.h, docs/DESIGN.md §Plugins).
#include "attention/plugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

namespace attn {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  std::string line = "plugin " + path + ": " + what;
  std::replace(line.begin(), line.end(), '\n', ' ');  // dlerror texts may hold newlines
  throw UsageError(line);
}

// Handles of the plugins whose registration succeeded: dlopen returns the same handle for the
// same file, so a plugin named twice (on the command line and in ATTNBENCH_PLUGINS) loads once.
std::set<void*>& loaded() {
  static std::set<void*> handles;
  return handles;
}

// dlopen searches the library path for names without a slash; a plugin is a file.
std::string as_file_path(const std::string& path) {
  return path.find('/') == std::string::npos ? "./" + path : path;
}

}  // namespace

void load_plugin(const std::string& path) {
  if (path.empty()) throw UsageError("plugin path is empty; expected the path of a .so file");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail(path, std::filesystem::exists(path, ec) ? "is not a regular file" : "no such file");
  // RTLD_NOW: an undefined symbol (a plugin built against other headers) fails here, with
  // dlerror naming it, instead of at the first call into it.
  void* handle = dlopen(as_file_path(path).c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) fail(path, std::string("cannot be loaded: ") + dlerror());
  if (loaded().count(handle)) return;
  auto entry =
      reinterpret_cast<attnbench_plugin_register_fn>(dlsym(handle, ATTNBENCH_PLUGIN_ENTRY));
  if (!entry)
    fail(path, "not an attnbench plugin: it exports no " ATTNBENCH_PLUGIN_ENTRY
               " (define one with ATTNBENCH_PLUGIN, attention/plugin.h)");
  attnbench_plugin_context ctx{ATTNBENCH_ABI_VERSION, -1, {}};
  const size_t before = variants().size();
  const int rc = entry(&ctx);
  // A hand-written entry point that skips the version check is refused all the same.
  const bool same_abi = ctx.plugin_abi_version == ATTNBENCH_ABI_VERSION;
  if (rc == 0 && same_abi) {
    loaded().insert(handle);
    return;
  }
  truncate_variants(before);  // all or none
  ctx.error[sizeof ctx.error - 1] = '\0';
  if (!same_abi || rc == ATTNBENCH_PLUGIN_ABI_MISMATCH)
    fail(path, "built against attnbench ABI version " + std::to_string(ctx.plugin_abi_version) +
                   ", this attnbench has ABI version " + std::to_string(ATTNBENCH_ABI_VERSION) +
                   "; rebuild the plugin against this attnbench");
  fail(path, ctx.error[0]
                 ? std::string(ctx.error)
                 : "registration failed (entry point returned " + std::to_string(rc) + ")");
}

void load_plugins_from_env() {
  const char* list = std::getenv("ATTNBENCH_PLUGINS");
  if (!list) return;
  std::stringstream ss(list);
  for (std::string path; std::getline(ss, path, ':');)
    if (!path.empty()) load_plugin(path);
}

}  // namespace attn
