#include <algorithm>
#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>

#include "attention/positional/positional.h"
#include "attention/registry.h"
#include "harness/cli.h"
#include "harness/inputs.h"

namespace attnbench {
namespace {

void print_variants() {
  std::cout << "Variants (spec: name[:key=value,...]):\n";
  for (const auto& v : attn::variants()) {
    std::cout << "\n  " << v.name << "\n      " << v.doc << "\n";
    std::cout << "      backward: "
              << (v.make(attn::parse_params(v, ""))->has_backward() ? "yes" : "no backward yet")
              << "\n";
    for (const auto& p : v.params)
      std::cout << "      " << p.describe() << "\n        " << p.doc << "\n";
  }
}

// Prints `text` word-wrapped to 100 columns, every line indented by `indent` spaces.
void print_wrapped(const std::string& text, size_t indent) {
  auto columns = [](const std::string& s) {  // UTF-8 code points, not bytes
    return size_t(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
  };
  std::istringstream words(text);
  std::string word, line;
  auto flush = [&] { std::cout << std::string(indent, ' ') << line << "\n"; };
  while (words >> word) {
    if (!line.empty() && indent + columns(line) + 1 + columns(word) > 100) flush(), line.clear();
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) flush();
}

void print_distributions() {
  std::cout << "\nInput distributions (--dist NAME[:key=value,...]):\n";
  for (const auto& d : distributions()) {
    std::cout << "\n  " << d.syntax << "\n";
    print_wrapped(d.doc, 6);
    print_wrapped(std::string("Stresses: ") + d.stresses, 6);
  }
}

}  // namespace

int cmd_list(const Args& args) {
  namespace po = boost::program_options;
  po::options_description opts("attnbench list");
  opts.add_options()("help,h", "this help");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  print_variants();
  print_distributions();
  std::cout << "\n" << attn::positional::describe_kinds();
  return 0;
}

}  // namespace attnbench
