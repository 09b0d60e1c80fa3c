#include <boost/program_options/errors.hpp>

#include "harness/cli.h"

namespace attnbench {

namespace po = boost::program_options;

namespace {

std::string syntax_problem(po::invalid_syntax::kind_t kind) {
  switch (kind) {
    case po::invalid_syntax::long_not_allowed:
      return "long options are not allowed";
    case po::invalid_syntax::long_adjacent_not_allowed:
      return "a value glued to a long option (--name=value) is not allowed";
    case po::invalid_syntax::short_adjacent_not_allowed:
      return "a value glued to a short option is not allowed";
    case po::invalid_syntax::empty_adjacent_parameter:
      return "has an empty value";
    case po::invalid_syntax::missing_parameter:
      return "is missing its value";
    case po::invalid_syntax::extra_parameter:
      return "takes no value";
    case po::invalid_syntax::unrecognized_line:
      return "unrecognized line (expected key = value)";
  }
  return "has invalid syntax";
}

std::string validation_problem(po::validation_error::kind_t kind) {
  switch (kind) {
    case po::validation_error::multiple_values_not_allowed:
      return "takes one value, not several";
    case po::validation_error::at_least_one_value_required:
      return "needs a value";
    case po::validation_error::invalid_bool_value:
      return "has an invalid value (expected true or false)";
    case po::validation_error::invalid_option_value:
      return "has an invalid value (not a number of the expected type?)";
    case po::validation_error::invalid_option:
      return "is invalid";
  }
  return "has an invalid value";
}

}  // namespace

// Boost 1.74's error_with_option_name::what() substitutes %value%, %canonical_option%, ...
// into its template with a loop that never ends when a substituted text itself holds such a
// token (a user value like "%value%"), so what() is called only on the classes without
// substitutions, and the others are described from their type, kind and option name.
std::string describe_option_error(const po::error& e) {
  const auto* named = dynamic_cast<const po::error_with_option_name*>(&e);
  if (!named) return e.what();
  const std::string name = named->get_option_name();
  const std::string opt = name.empty() ? std::string("an option") : "option '" + name + "'";
  if (dynamic_cast<const po::invalid_config_file_syntax*>(&e)) {
    const auto& s = static_cast<const po::invalid_syntax&>(e);
    return s.kind() == po::invalid_syntax::unrecognized_line
               ? "unrecognized line (expected key = value or a [section])"
               : opt + " " + syntax_problem(s.kind());
  }
  if (const auto* s = dynamic_cast<const po::invalid_syntax*>(&e))
    return opt + " " + syntax_problem(s->kind());
  if (const auto* v = dynamic_cast<const po::validation_error*>(&e))
    return opt + " " + validation_problem(v->kind());
  if (dynamic_cast<const po::unknown_option*>(&e)) return "unknown " + opt;
  if (dynamic_cast<const po::ambiguous_option*>(&e)) return opt + " is ambiguous";
  if (dynamic_cast<const po::multiple_values*>(&e)) return opt + " takes only one value";
  if (dynamic_cast<const po::multiple_occurrences*>(&e))
    return opt + " cannot be given more than once";
  if (dynamic_cast<const po::required_option*>(&e)) return opt + " is required but missing";
  return opt + " is invalid";
}

}  // namespace attnbench
