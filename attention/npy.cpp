#include "attention/npy.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "attention/tensor.h"

namespace attn {
namespace {

[[noreturn]] void bad(const std::string& name, const std::string& why) {
  throw RuntimeError(name + ": " + why);
}

// Value of `key` in the header dict, e.g. 'descr': '<f4' -> <f4 (quotes stripped).
std::string header_field(const std::string& header, const std::string& key,
                         const std::string& name) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) bad(name, "malformed .npy header: no '" + key + "' field");
  size_t colon = header.find(':', k);
  if (colon == std::string::npos) bad(name, "malformed .npy header near '" + key + "'");
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) bad(name, "malformed .npy header near '" + key + "'");
  if (header[start] == '(') {
    size_t end = header.find(')', start);
    if (end == std::string::npos) bad(name, "malformed .npy header: unterminated shape");
    return header.substr(start + 1, end - start - 1);
  }
  if (header[start] == '\'') {
    size_t end = header.find('\'', start + 1);
    if (end == std::string::npos) bad(name, "malformed .npy header: unterminated string");
    return header.substr(start + 1, end - start - 1);
  }
  size_t end = header.find_first_of(",}", start);
  return header.substr(start, end - start);
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& name) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t a = item.find_first_not_of(' ');
    if (a == std::string::npos) continue;
    char* end = nullptr;
    long long v = std::strtoll(item.c_str() + a, &end, 10);
    while (*end == ' ' || *end == 'L') ++end;
    if (end == item.c_str() + a || *end != '\0' || v < 0)
      bad(name, "malformed .npy shape '(" + text + ")'");
    shape.push_back(v);
  }
  return shape;
}

// True when a finite double rounds to a finite float. Round-to-nearest sends everything below
// the midpoint between FLT_MAX and 2^128 to at most FLT_MAX and the rest to Inf; converting
// such a value is undefined behaviour in C++ ([conv.double]), so it must be caught first.
bool fits_float(double v) {
  constexpr double kFloatRoundsToInf = 0x1.ffffffp+127;  // FLT_MAX + half an ulp
  return std::fabs(v) < kFloatRoundsToInf;
}

[[noreturn]] void bad_range(const std::string& name, double v, size_t i) {
  char value[32];
  std::snprintf(value, sizeof value, "%.6g", v);
  bad(name, std::string("value ") + value + " at flat index " + std::to_string(i) +
                " is outside the float32 range (|x| <= 3.40282e+38); inputs must fit in float32");
}

}  // namespace

NpyArray parse_npy(const std::string& bytes, const std::string& name) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    bad(name, "not a .npy file (bad magic string)");
  int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<unsigned char>(bytes[9]) << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) bad(name, "truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i)
      header_len |= size_t(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    bad(name, "unsupported .npy version " + std::to_string(major) + " (1, 2 and 3 are valid)");
  }
  if (bytes.size() < offset + header_len) bad(name, "truncated .npy header");
  std::string header = bytes.substr(offset, header_len);
  std::string descr = header_field(header, "descr", name);
  std::string fortran = header_field(header, "fortran_order", name);
  if (fortran.find("True") != std::string::npos)
    bad(name, "Fortran-order arrays are not supported; save with np.ascontiguousarray");
  if (fortran.find("False") == std::string::npos)
    bad(name, "malformed .npy header: fortran_order is '" + fortran + "'");
  if (descr != "<f4" && descr != "<f8")
    bad(name, "unsupported dtype '" + descr + "'; valid: float32 (<f4) or float64 (<f8)");
  NpyArray arr;
  arr.shape = parse_shape(header_field(header, "shape", name), name);
  size_t count = 1;
  for (int64_t d : arr.shape) {
    if (d != 0 && count > (size_t(1) << 40) / size_t(d)) bad(name, "array too large");
    count *= size_t(d);
  }
  size_t elem = descr == "<f4" ? 4 : 8;
  size_t data_off = offset + header_len;
  if (bytes.size() - data_off < count * elem)
    bad(name, "truncated data: expected " + std::to_string(count * elem) + " bytes, found " +
                  std::to_string(bytes.size() - data_off));
  arr.data.resize(count);
  const char* src = bytes.data() + data_off;
  for (size_t i = 0; i < count; ++i) {
    double v;
    if (elem == 4) {
      float f;
      std::memcpy(&f, src + 4 * i, 4);
      v = f;
    } else {
      std::memcpy(&v, src + 8 * i, 8);
    }
    if (!std::isfinite(v))
      bad(name,
          "contains NaN or Inf at flat index " + std::to_string(i) + "; inputs must be finite");
    if (!fits_float(v)) bad_range(name, v, i);
    arr.data[i] = static_cast<float>(v);
  }
  return arr;
}

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw RuntimeError(path + ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_npy(ss.str(), path);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw RuntimeError(path + ": cannot write (is the directory there and writable?)");
    f.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw RuntimeError(path + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw RuntimeError(path + ": cannot rename temporary file into place");
  }
}

void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  size_t count = 1;
  for (int64_t d : shape) dims += std::to_string(d) + ", ", count *= size_t(d);
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += char(1), out += char(0);
  out += char(header.size() & 0xff), out += char(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(data), count * sizeof(float));
  write_file_atomic(path, out);
}

}  // namespace attn
