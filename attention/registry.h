// Variant spec strings ("name:key=value,key=value") to Attention instances.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention/attention.h"

namespace attn {

// One parameter a variant accepts. Values are validated before the factory sees them.
struct ParamSpec {
  enum class Kind { Int, Float, Bool, Choice, Text };
  std::string key;
  Kind kind = Kind::Int;
  std::string default_value;
  std::string doc;
  double min = -1e300, max = 1e300;  // inclusive range for Int and Float
  std::vector<std::string> choices;  // for Choice

  std::string describe() const;  // "radius=int ≥ 0 (default 256): doc"
};

// The validated parameters handed to a factory: every declared key has a value.
class Params {
 public:
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get(const std::string& key) const;
  ParamValues values;
};

struct VariantInfo {
  std::string name;
  std::string doc;  // what it computes, what it approximates, its cost
  std::vector<ParamSpec> params;
  std::function<std::unique_ptr<Attention>(const Params&)> make;
};

// Every registered variant, in listing order: the built-in ones, then those registered at run
// time. Registering may move the entries, so do not keep references across a registration.
const std::vector<VariantInfo>& variants();
// Adds a variant at run time (what a plugin's entry point calls, attention/plugin.h). UsageError
// when the name is not lower-case letters, digits and _, is already registered, the factory is
// missing, a parameter key repeats or a default fails its own spec. Not thread-safe: register
// before variants are used from several threads.
void register_variant(VariantInfo info);
// Drops the variants registered after the first `count` (the plugin loader's rollback).
void truncate_variants(size_t count);
const VariantInfo& find_variant(const std::string& name);  // UsageError listing valid names

// Parses and validates a spec; UsageError on unknown names or keys and bad or
// out-of-range values, with what is valid.
std::unique_ptr<Attention> make_attention(const std::string& spec);
Params parse_params(const VariantInfo& info, const std::string& body);

// The registrations: one function per variant file (see registry.cpp).
VariantInfo reference_variant();
VariantInfo full_materialized_variant();
VariantInfo full_variant();
VariantInfo lsh_variant();
VariantInfo sliding_window_variant();
VariantInfo longformer_variant();
VariantInfo performer_variant();
VariantInfo bigbird_variant();
VariantInfo sink_window_variant();
VariantInfo block_sparse_variant();
VariantInfo sparse_transformer_variant();
VariantInfo linformer_variant();
VariantInfo nystrom_variant();
VariantInfo linear_variant();

}  // namespace attn
