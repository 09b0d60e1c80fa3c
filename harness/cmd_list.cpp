#include <boost/program_options.hpp>
#include <iostream>

#include "attention/registry.h"
#include "harness/cli.h"

namespace attnbench {

int cmd_list(const Args& args) {
  namespace po = boost::program_options;
  po::options_description opts("attnbench list");
  opts.add_options()("help,h", "this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  std::cout << "Variants (spec: name[:key=value,...]):\n";
  for (const auto& v : attn::variants()) {
    std::cout << "\n  " << v.name << "\n      " << v.doc << "\n";
    for (const auto& p : v.params)
      std::cout << "      " << p.describe() << "\n        " << p.doc << "\n";
  }
  return 0;
}

}  // namespace attnbench
