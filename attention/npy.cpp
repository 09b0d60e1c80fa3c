#include "attention/npy.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
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

// Where the bytes of a .npy come from: an open file or an in-memory image. Both go through the
// same parser, so a file is read once, straight into its destination.
class Source {
 public:
  virtual ~Source() = default;
  // Copies up to n bytes to dst; fewer only at the end of the input.
  virtual size_t read(char* dst, size_t n) = 0;
  // Bytes left when known without reading (memory, regular files), else SIZE_MAX (pipes).
  virtual size_t remaining() const = 0;
};

class MemorySource final : public Source {
 public:
  explicit MemorySource(const std::string& bytes) : bytes_(bytes) {}
  size_t read(char* dst, size_t n) override {
    n = std::min(n, remaining());
    std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  size_t remaining() const override { return bytes_.size() - pos_; }

 private:
  const std::string& bytes_;
  size_t pos_ = 0;
};

class FileSource final : public Source {
 public:
  explicit FileSource(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw RuntimeError(path + ": cannot open file");
    struct stat st;
    const bool stat_ok = ::fstat(fd_, &st) == 0;
    const std::string why = !stat_ok              ? std::string("read failed: ") + strerror(errno)
                            : S_ISDIR(st.st_mode) ? "is a directory, not a .npy file"
                                                  : "";
    if (!why.empty()) {
      ::close(fd_);  // the destructor does not run when the constructor throws
      bad(path, why);
    }
    if (S_ISREG(st.st_mode)) left_ = size_t(st.st_size);
  }
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  size_t read(char* dst, size_t n) override {
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::read(fd_, dst + done, n - done);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail_read();
      if (r == 0) break;
      done += size_t(r);
    }
    if (left_ != SIZE_MAX) left_ -= std::min(left_, done);
    return done;
  }
  size_t remaining() const override { return left_; }

 private:
  [[noreturn]] void fail_read() const {
    bad(path_, std::string("read failed: ") + strerror(errno));
  }
  const std::string& path_;
  int fd_ = -1;
  size_t left_ = SIZE_MAX;
};

// Reads n bytes into a string that grows only as bytes arrive, so a header length field of
// 4 GiB in a short file (or a pipe) costs the bytes present, not 4 GiB.
std::string read_string(Source& src, size_t n) {
  std::string out;
  constexpr size_t kStep = size_t(1) << 16;
  while (out.size() < n) {
    const size_t want = std::min(kStep, n - out.size()), at = out.size();
    out.resize(at + want);
    const size_t got = src.read(out.data() + at, want);
    out.resize(at + got);
    if (got < want) break;
  }
  return out;
}

struct Layout {
  std::vector<int64_t> shape;
  size_t count = 0;  // product of shape
  size_t elem = 4;   // bytes per value: 4 (<f4) or 8 (<f8)
};

// Magic string, version, header dict: everything before the data.
Layout read_header(Source& src, const std::string& name) {
  char pre[12];
  if (src.read(pre, 10) < 10 || std::memcmp(pre, "\x93NUMPY", 6) != 0)
    bad(name, "not a .npy file (bad magic string)");
  const int major = static_cast<unsigned char>(pre[6]);
  size_t header_len = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(pre[8]) | static_cast<unsigned char>(pre[9]) << 8;
  } else if (major == 2 || major == 3) {
    if (src.read(pre + 10, 2) < 2) bad(name, "truncated .npy header");
    for (int i = 0; i < 4; ++i)
      header_len |= size_t(static_cast<unsigned char>(pre[8 + i])) << (8 * i);
  } else {
    bad(name, "unsupported .npy version " + std::to_string(major) + " (1, 2 and 3 are valid)");
  }
  if (src.remaining() < header_len) bad(name, "truncated .npy header");
  const std::string header = read_string(src, header_len);
  if (header.size() < header_len) bad(name, "truncated .npy header");
  std::string descr = header_field(header, "descr", name);
  std::string fortran = header_field(header, "fortran_order", name);
  if (fortran.find("True") != std::string::npos)
    bad(name, "Fortran-order arrays are not supported; save with np.ascontiguousarray");
  if (fortran.find("False") == std::string::npos)
    bad(name, "malformed .npy header: fortran_order is '" + fortran + "'");
  if (descr != "<f4" && descr != "<f8")
    bad(name, "unsupported dtype '" + descr + "'; valid: float32 (<f4) or float64 (<f8)");
  Layout l;
  l.shape = parse_shape(header_field(header, "shape", name), name);
  l.count = 1;
  for (int64_t d : l.shape) {
    if (d != 0 && l.count > (size_t(1) << 40) / size_t(d)) bad(name, "array too large");
    l.count *= size_t(d);
  }
  l.elem = descr == "<f4" ? 4 : 8;
  return l;
}

[[noreturn]] void truncated_data(const std::string& name, size_t expected, size_t found) {
  bad(name, "truncated data: expected " + std::to_string(expected) + " bytes, found " +
                std::to_string(found));
}

// Magnitude bits: for IEEE values these order like |x|, and NaN/Inf sit above every finite
// value, so one max over a chunk (which vectorizes) tells whether any value in it is bad.
uint32_t magnitude(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b & 0x7fffffffu;
}
uint64_t magnitude(double x) {
  uint64_t b;
  std::memcpy(&b, &x, 8);
  return b & 0x7fffffffffffffffull;
}

// Round-to-nearest sends every double below the midpoint between FLT_MAX and 2^128 to at most
// FLT_MAX and the rest to Inf; converting those is undefined behaviour in C++ ([conv.double]),
// so they are refused before the cast.
constexpr double kFloatRoundsToInf = 0x1.ffffffp+127;  // FLT_MAX + half an ulp

[[noreturn]] void bad_value(const std::string& name, double v, size_t index) {
  if (!std::isfinite(v))
    bad(name,
        "contains NaN or Inf at flat index " + std::to_string(index) + "; inputs must be finite");
  char value[32];
  std::snprintf(value, sizeof value, "%.6g", v);
  bad(name, std::string("value ") + value + " at flat index " + std::to_string(index) +
                " is outside the float32 range (|x| <= 3.40282e+38); inputs must fit in float32");
}

// The first value of v[0, n) whose magnitude bits reach `limit`, reported with its flat index
// (first + position); returns when there is none.
template <class T, class Bits>
void check_chunk(const T* v, size_t n, Bits limit, size_t first, const std::string& name) {
  Bits worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, magnitude(v[i]));
  if (worst < limit) return;
  for (size_t i = 0; i < n; ++i)
    if (magnitude(v[i]) >= limit) bad_value(name, double(v[i]), first + i);
}

// Reads the data in chunks that fit in L2, checking (and, for float64, converting) each chunk
// while it is still in cache: one pass over the file, straight into dst.
void read_values(Source& src, const Layout& l, float* dst, const std::string& name) {
  constexpr size_t kChunk = size_t(1) << 16;  // values per chunk (256 or 512 KiB)
  const size_t expected = l.count * l.elem;
  std::vector<double> staging(l.elem == 8 ? std::min(kChunk, l.count) : 0);
  for (size_t first = 0; first < l.count; first += kChunk) {
    const size_t n = std::min(kChunk, l.count - first);
    char* into = l.elem == 4 ? reinterpret_cast<char*>(dst + first)
                             : reinterpret_cast<char*>(staging.data());
    const size_t got = src.read(into, n * l.elem);
    if (got < n * l.elem) truncated_data(name, expected, first * l.elem + got);
    if (l.elem == 4) {
      check_chunk(dst + first, n, magnitude(std::numeric_limits<float>::infinity()), first, name);
    } else {
      check_chunk(staging.data(), n, magnitude(kFloatRoundsToInf), first, name);
      for (size_t i = 0; i < n; ++i) dst[first + i] = static_cast<float>(staging[i]);
    }
  }
}

std::vector<int64_t> read_npy_from(Source& src, const std::string& name,
                                   const NpyDestination& dest) {
  const Layout l = read_header(src, name);
  // Known sizes are checked before the destination is allocated.
  if (src.remaining() != SIZE_MAX && src.remaining() < l.count * l.elem)
    truncated_data(name, l.count * l.elem, src.remaining());
  float* dst = dest(l.shape);
  read_values(src, l, dst, name);
  return l.shape;
}

NpyDestination into_vector(NpyArray& arr) {
  return [&arr](const std::vector<int64_t>& shape) {
    size_t count = 1;
    for (int64_t d : shape) count *= size_t(d);
    arr.data.resize(count);
    return arr.data.data();
  };
}

// write(2) until everything is written (it may write less, e.g. on a signal).
bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t w = ::write(fd, bytes.data(), bytes.size());
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    bytes.remove_prefix(size_t(w));
  }
  return true;
}

}  // namespace

void check_finite(const float* data, size_t count, const std::string& name) {
  check_chunk(data, count, magnitude(std::numeric_limits<float>::infinity()), 0, name);
}

void to_float32_checked(const double* src, size_t count, float* dst, const std::string& name) {
  check_chunk(src, count, magnitude(kFloatRoundsToInf), 0, name);
  for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
}

NpyArray parse_npy(const std::string& bytes, const std::string& name) {
  MemorySource src(bytes);
  NpyArray arr;
  arr.shape = read_npy_from(src, name, into_vector(arr));
  return arr;
}

NpyArray read_npy(const std::string& path) {
  FileSource src(path);
  NpyArray arr;
  arr.shape = read_npy_from(src, path, into_vector(arr));
  return arr;
}

std::vector<int64_t> read_npy_into(const std::string& path, const NpyDestination& dest) {
  FileSource src(path);
  return read_npy_from(src, path, dest);
}

void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw RuntimeError(path + ": cannot write (is the directory there and writable?)");
  bool ok = true;
  for (std::string_view part : parts) ok = ok && write_all(fd, part);
  // No fsync: the rename makes the file appear whole or not at all, which is what readers
  // need; surviving a power cut is not promised (and would cost a disk flush per file).
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw RuntimeError(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw RuntimeError(path + ": cannot rename temporary file into place");
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_file_atomic(path, {std::string_view(contents)});
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
  std::string preamble = "\x93NUMPY";
  preamble += char(1), preamble += char(0);
  preamble += char(header.size() & 0xff), preamble += char(header.size() >> 8);
  // The data goes from the caller's buffer to the file: no in-memory image of the file.
  write_file_atomic(path, {preamble + header, std::string_view(reinterpret_cast<const char*>(data),
                                                               count * sizeof(float))});
}

}  // namespace attn
