// Reading and writing NumPy .npy files (format version 1.0 to 3.0, little-endian, C order).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // float32 (float64 files are converted)
};

// Throws RuntimeError with a one-line message naming the file and the problem: bad magic or
// header, Fortran order, a dtype other than <f4/<f8, truncated data, NaN/Inf values, float64
// values that would round to ±Inf in float32.
NpyArray read_npy(const std::string& path);
// Given the file's shape, returns room for its product of floats (or throws to refuse it).
using NpyDestination = std::function<float*(const std::vector<int64_t>& shape)>;
// read_npy straight into the caller's buffer (e.g. a Tensor's): the file is read once, in
// chunks checked and converted while in cache, with no intermediate copy. Returns the shape.
std::vector<int64_t> read_npy_into(const std::string& path, const NpyDestination& dest);
// The value checks of read_npy on arrays already in memory (the Python module's inputs), with
// the same messages naming `name`: RuntimeError for a NaN or Inf, and, when converting float64
// to float32, for a value that would round to ±Inf.
void check_finite(const float* data, size_t count, const std::string& name);
void to_float32_checked(const double* src, size_t count, float* dst, const std::string& name);
// Writes float32 atomically (temporary file, then rename).
void write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data);
// Parses an in-memory .npy image by the same code as read_npy (exposed for tests and fuzzing).
NpyArray parse_npy(const std::string& bytes, const std::string& name);

// Writes `contents` to `path` through a temporary file in the same directory and a rename,
// so readers never see a half-written file.
void write_file_atomic(const std::string& path, const std::string& contents);
// The same for a file made of several pieces, written in order without joining them first.
void write_file_atomic(const std::string& path, std::initializer_list<std::string_view> parts);

}  // namespace attn
