#include "attention/registry.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace attn {

// Adding a variant: write attention/NAME.cpp with a NAME_variant() function, declare it in
// registry.h and add it here.
static std::vector<VariantInfo> builtin_variants() {
  static const std::vector<VariantInfo> all = {
      reference_variant(),
      full_materialized_variant(),
      full_variant(),
      lsh_variant(),
      sliding_window_variant(),
      longformer_variant(),
      performer_variant(),
      bigbird_variant(),
      sink_window_variant(),
      block_sparse_variant(),
      sparse_transformer_variant(),
      linformer_variant(),
      nystrom_variant(),
      linear_variant(),
  };
  return all;
}

namespace {

// The built-in variants, then those registered at run time (plugins, docs/DESIGN.md §Plugins).
std::vector<VariantInfo>& registry() {
  static std::vector<VariantInfo> all = builtin_variants();
  return all;
}

std::string join_names() {
  std::string s;
  for (const auto& v : variants()) s += (s.empty() ? "" : ", ") + v.name;
  return s;
}

std::string join_keys(const VariantInfo& info) {
  if (info.params.empty()) return "(none)";
  std::string s;
  for (const auto& p : info.params) s += (s.empty() ? "" : ", ") + p.key;
  return s;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// The one parser of Int and Float values: check_value accepts exactly what get_int and
// get_float read back (std::stod used to throw a bare "stod" on a denormal like 1e-320).
bool parse_int(const std::string& text, long long& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoll(text.c_str(), &end, 10);
  return !text.empty() && *end == '\0' && errno == 0;
}
bool parse_float(const std::string& text, double& out) {
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);  // ERANGE on denormals is fine: the value is finite
  return !text.empty() && *end == '\0' && std::isfinite(out);
}

bool parse_bool(const std::string& v, bool& out) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return out = true, true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return out = false, true;
  return false;
}

// Whole numbers print in full ("1048576", not "1.04858e+06"): they are limits users type.
std::string format_number(double v) {
  if (v == std::floor(v) && std::abs(v) < 1e18) return std::to_string(static_cast<long long>(v));
  std::ostringstream s;
  s << v;
  return s.str();
}

// Checks one value against its spec and returns it in canonical form.
std::string check_value(const VariantInfo& info, const ParamSpec& p, const std::string& value) {
  auto fail = [&](const std::string& why) {
    throw UsageError(info.name + ": parameter " + p.key + "=" + value + " " + why + "; expected " +
                     p.describe());
  };
  switch (p.kind) {
    case ParamSpec::Kind::Int: {
      long long v = 0;
      if (!parse_int(value, v)) fail("is not an integer");
      if (v < p.min || v > p.max) fail("is out of range");
      return std::to_string(v);
    }
    case ParamSpec::Kind::Float: {
      double v = 0;
      if (!parse_float(value, v)) fail("is not a finite number");
      if (v < p.min || v > p.max) fail("is out of range");
      return value;
    }
    case ParamSpec::Kind::Bool: {
      bool b;
      if (!parse_bool(value, b)) fail("is not true or false");
      return b ? "true" : "false";
    }
    case ParamSpec::Kind::Choice:
      for (const auto& c : p.choices)
        if (c == value) return value;
      fail("is not one of the choices");
      break;
    case ParamSpec::Kind::Text:
      if (value.empty()) fail("is empty");
      return value;
  }
  return value;
}

}  // namespace

std::string ParamSpec::describe() const {
  std::ostringstream s;
  s << key << "=";
  switch (kind) {
    case Kind::Int:
    case Kind::Float:
      s << (kind == Kind::Int ? "int" : "number");
      if (min > -1e299 && max < 1e299)
        s << " in [" << format_number(min) << ", " << format_number(max) << "]";
      else if (min > -1e299)
        s << " >= " << format_number(min);
      else if (max < 1e299)
        s << " <= " << format_number(max);
      break;
    case Kind::Bool:
      s << "true|false";
      break;
    case Kind::Choice:
      for (size_t i = 0; i < choices.size(); ++i) s << (i ? "|" : "") << choices[i];
      break;
    case Kind::Text:
      s << "text";
      break;
  }
  s << " (default " << (default_value.empty() ? "none" : default_value) << ")";
  return s.str();
}

const std::string& Params::get(const std::string& key) const {
  auto it = values.find(key);
  if (it == values.end()) throw std::logic_error("undeclared parameter " + key);
  return it->second;
}
int64_t Params::get_int(const std::string& key) const {
  long long v = 0;
  if (!parse_int(get(key), v))
    throw UsageError("parameter " + key + "=" + get(key) + " is not an integer");
  return v;
}
double Params::get_float(const std::string& key) const {
  double v = 0;
  if (!parse_float(get(key), v))
    throw UsageError("parameter " + key + "=" + get(key) + " is not a finite number");
  return v;
}
bool Params::get_bool(const std::string& key) const {
  return get(key) == "true";
}

const std::vector<VariantInfo>& variants() {
  return registry();
}

// A name is what a spec starts with and what result files and plots key on, so it is kept to
// characters that need no quoting there and cannot be mistaken for the spec's separators.
void register_variant(VariantInfo info) {
  const std::string& name = info.name;
  const bool well_formed = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (!well_formed)
    throw UsageError("variant name '" + name +
                     "' is invalid; expected lower-case letters, digits and _");
  for (const auto& v : variants())
    if (v.name == name) throw UsageError("variant '" + name + "' is already registered");
  if (!info.make) throw UsageError("variant '" + name + "' has no factory");
  for (size_t a = 0; a < info.params.size(); ++a) {
    const ParamSpec& p = info.params[a];
    for (size_t b = 0; b < a; ++b)
      if (info.params[b].key == p.key)
        throw UsageError("variant '" + name + "' declares parameter " + p.key + " twice");
    if (!p.default_value.empty()) check_value(info, p, p.default_value);
  }
  registry().push_back(std::move(info));
}

void truncate_variants(size_t count) {
  auto& all = registry();
  if (count < all.size()) all.erase(all.begin() + count, all.end());
}

const VariantInfo& find_variant(const std::string& name) {
  for (const auto& v : variants())
    if (v.name == name) return v;
  throw UsageError("unknown variant '" + name + "'; valid variants: " + join_names() +
                   " (see `attnbench list`)");
}

Params parse_params(const VariantInfo& info, const std::string& body) {
  Params out;
  for (const auto& p : info.params)
    if (!p.default_value.empty()) out.values[p.key] = p.default_value;
  std::stringstream ss(body);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos)
      throw UsageError(info.name + ": parameter '" + item +
                       "' needs the form key=value; valid keys: " + join_keys(info));
    std::string key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    const ParamSpec* spec = nullptr;
    for (const auto& p : info.params)
      if (p.key == key) spec = &p;
    if (!spec)
      throw UsageError(info.name + ": unknown parameter '" + key +
                       "'; valid keys: " + join_keys(info));
    out.values[key] = check_value(info, *spec, value);
  }
  for (const auto& p : info.params)
    if (!out.values.count(p.key))
      throw UsageError(info.name + ": parameter " + p.key + " is required; " + p.describe());
  return out;
}

std::unique_ptr<Attention> make_attention(const std::string& spec) {
  std::string s = trim(spec);
  size_t colon = s.find(':');
  std::string name = trim(s.substr(0, colon));
  if (name.empty())
    throw UsageError("empty variant spec; expected name[:key=value,...], e.g. full");
  const VariantInfo& info = find_variant(name);
  Params p = parse_params(info, colon == std::string::npos ? "" : s.substr(colon + 1));
  return info.make(p);
}

void Attention::save_random(const std::string&, const Shape&) const {
  throw UsageError(name() + " has no random state to export");
}
void Attention::load_random(const std::string&, const Shape&) {
  throw UsageError(name() + " has no random state to import");
}

}  // namespace attn
