#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "attention/npy.h"
#include "attention/tensor.h"

namespace attn {
namespace {

std::string npy_image(const std::string& descr, const std::string& fortran,
                      const std::string& shape, const std::string& payload) {
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
  header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += char(1), out += char(0), out += char(header.size() & 0xff),
      out += char(header.size() >> 8);
  return out + header + payload;
}

std::string floats(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::string error_of(const std::string& image) {
  try {
    parse_npy(image, "x.npy");
  } catch (const RuntimeError& e) {
    return e.what();
  }
  return "";
}

TEST(Npy, RoundTripsFloat32) {
  auto dir = std::filesystem::temp_directory_path() / "attn_npy_test";
  std::filesystem::create_directories(dir);
  std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 5.0f, 6.0f};
  write_npy((dir / "a.npy").string(), {2, 3}, data.data());
  NpyArray a = read_npy((dir / "a.npy").string());
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, data);
}

TEST(Npy, ConvertsFloat64) {
  std::vector<double> d = {0.5, -1.25};
  NpyArray a = parse_npy(npy_image("<f8", "False", "(2,)", std::string((char*)d.data(), 16)), "x");
  EXPECT_EQ(a.data, (std::vector<float>{0.5f, -1.25f}));
}

// Each malformed image with the phrase its error must contain; every error is one line.
TEST(Npy, MalformedFilesGiveOneLineErrors) {
  const std::string ok = floats({1, 2, 3, 4});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GARBAGE-NOT-NPY", "bad magic"},
      {"x", "bad magic"},
      {npy_image("<f4", "True", "(2, 2)", ok), "Fortran"},
      {npy_image("<i4", "False", "(2, 2)", ok), "dtype"},
      {npy_image(">f4", "False", "(2, 2)", ok), "dtype"},
      {npy_image("<f4", "False", "(2, 3)", ok), "truncated"},
      {npy_image("<f4", "False", "(2, x)", ok), "shape"},
      {std::string("\x93NUMPY\x01\x00\xff\x00{", 11), "truncated"},
      {npy_image("<f4", "False", "(2,)", floats({1, nan})), "NaN"},
      {npy_image("<f4", "False", "(2,)", floats({inf, 1})), "Inf"},
  };
  for (const auto& [image, says] : cases) {
    const std::string msg = error_of(image);
    EXPECT_NE(msg.find(says), std::string::npos) << "'" << says << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(Npy, MissingFileIsRuntimeError) {
  EXPECT_THROW(read_npy("/nonexistent/q.npy"), RuntimeError);
}

}  // namespace
}  // namespace attn
