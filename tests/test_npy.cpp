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

TEST(Npy, MalformedFilesGiveOneLineErrors) {
  const std::string ok = floats({1, 2, 3, 4});
  EXPECT_NE(error_of("GARBAGE-NOT-NPY").find("bad magic"), std::string::npos);
  EXPECT_NE(error_of(npy_image("<f4", "True", "(2, 2)", ok)).find("Fortran"), std::string::npos);
  EXPECT_NE(error_of(npy_image("<i4", "False", "(2, 2)", ok)).find("dtype"), std::string::npos);
  EXPECT_NE(error_of(npy_image(">f4", "False", "(2, 2)", ok)).find("dtype"), std::string::npos);
  EXPECT_NE(error_of(npy_image("<f4", "False", "(2, 3)", ok)).find("truncated"), std::string::npos);
  EXPECT_NE(error_of(npy_image("<f4", "False", "(2, x)", ok)).find("shape"), std::string::npos);
  EXPECT_NE(error_of(std::string("\x93NUMPY\x01\x00\xff\x00{", 11)).find("truncated"),
            std::string::npos);
  float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_of(npy_image("<f4", "False", "(2,)", floats({1, nan}))).find("NaN"),
            std::string::npos);
  float inf = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of(npy_image("<f4", "False", "(2,)", floats({inf, 1}))).find("Inf"),
            std::string::npos);
  for (const auto& msg : {error_of("x"), error_of(npy_image("<f4", "True", "(1,)", ok))})
    EXPECT_EQ(msg.find('\n'), std::string::npos);
}

TEST(Npy, MissingFileIsRuntimeError) {
  EXPECT_THROW(read_npy("/nonexistent/q.npy"), RuntimeError);
}

}  // namespace
}  // namespace attn
