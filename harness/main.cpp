#include <boost/program_options/errors.hpp>
#include <cstring>
#include <iostream>

#include "attention/tensor.h"
#include "harness/cli.h"

namespace {

void print_help() {
  std::cout << "attnbench — speed, memory, scaling and accuracy of attention variants\n\n"
               "usage: attnbench COMMAND [options]   (attnbench COMMAND --help for its options)\n\n"
               "commands:\n";
  for (const auto& c : attnbench::commands())
    std::cout << "  " << c.name << std::string(10 - std::strlen(c.name), ' ') << c.summary << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  attnbench::Args args(argv + 2, argv + argc);
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
