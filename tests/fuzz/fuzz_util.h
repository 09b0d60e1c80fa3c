// What every fuzz target shares: the errors a parser may throw for bad input. Any other
// exception escapes LLVMFuzzerTestOneInput, std::terminate aborts, and libFuzzer reports it
// with the input that caused it.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#include "attention/tensor.h"

namespace attn::fuzz {

template <class F>
void expect_clean_errors(F&& f) {
  try {
    f();
  } catch (const UsageError&) {
  } catch (const RuntimeError&) {
  }
}

[[noreturn]] inline void fail(const std::string& why) {
  std::fprintf(stderr, "fuzz target failed: %s\n", why.c_str());
  std::abort();
}

}  // namespace attn::fuzz
