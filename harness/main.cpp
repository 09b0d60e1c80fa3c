#include <boost/program_options/errors.hpp>
#include <cstring>
#include <iostream>

#include "attention/plugin.h"
#include "attention/tensor.h"
#include "harness/cli.h"

namespace {

void print_help() {
  std::cout
      << "attnbench — speed, memory, scaling and accuracy of attention variants\n\n"
         "usage: attnbench [--plugin PATH.so ...] COMMAND [options]   (attnbench COMMAND "
         "--help for its options)\n\n"
         "  --plugin PATH.so  load a variant plugin before the command (repeatable; also\n"
         "                    ATTNBENCH_PLUGINS=PATH:PATH; README \"Add your own variant\")\n\n"
         "commands:\n";
  for (const auto& c : attnbench::commands())
    std::cout << "  " << c.name << std::string(10 - std::strlen(c.name), ' ') << c.summary << "\n";
}

// Loads the plugins of ATTNBENCH_PLUGINS, then those of the leading --plugin PATH (or
// --plugin=PATH) options, so that every command sees their variants. Returns the index of the
// command in argv.
int load_plugins(int argc, char** argv) {
  attn::load_plugins_from_env();
  int i = 1;
  for (; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--plugin=", 0) == 0) {
      attn::load_plugin(arg.substr(9));
    } else if (arg == "--plugin") {
      if (i + 1 >= argc) throw attn::UsageError("--plugin needs the path of a plugin .so");
      attn::load_plugin(argv[++i]);
    } else {
      break;
    }
  }
  return i;
}

}  // namespace

int main(int argc, char** argv) {
  int first = 1;
  try {
    first = load_plugins(argc, argv);
  } catch (const attn::UsageError& e) {
    std::cerr << "attnbench: " << e.what() << "\n";
    return 2;
  }
  if (argc <= first || !std::strcmp(argv[first], "--help") || !std::strcmp(argv[first], "-h")) {
    print_help();
    return argc <= first ? 2 : 0;
  }
  const std::string name = argv[first];
  attnbench::Args args(argv + first + 1, argv + argc);
  for (const auto& c : attnbench::commands()) {
    if (name != c.name) continue;
    try {
      return c.run(args);
    } catch (const attn::UsageError& e) {
      std::cerr << "attnbench " << name << ": " << e.what() << "\n";
      return 2;
    } catch (const boost::program_options::error& e) {
      std::cerr << "attnbench " << name << ": " << attnbench::describe_option_error(e)
                << " (see attnbench " << name << " --help)\n";
      return 2;
    } catch (const std::bad_alloc&) {
      std::cerr << "attnbench " << name << ": out of memory; use a smaller size\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "attnbench " << name << ": " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "attnbench: unknown command '" << name << "'; valid commands:";
  for (const auto& c : attnbench::commands()) std::cerr << " " << c.name;
  std::cerr << "\n";
  return 2;
}
