#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "attention/npy.h"
#include "attention/tensor.h"
#include "test_util.h"

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

std::string doubles(std::vector<double> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 8);
}

// A float64 beyond float range used to be cast to float (undefined; +Inf in practice) and
// reached the kernels as a silent Inf.
TEST(Npy, RejectsFloat64OutsideFloatRange) {
  const std::string big = error_of(npy_image("<f8", "False", "(3,)", doubles({0.5, 2.0, 1e300})));
  EXPECT_NE(big.find("flat index 2"), std::string::npos) << big;
  EXPECT_NE(big.find("float32 range"), std::string::npos) << big;
  EXPECT_EQ(big.find('\n'), std::string::npos);
  const std::string neg = error_of(npy_image("<f8", "False", "(2,)", doubles({-1e39, 0})));
  EXPECT_NE(neg.find("flat index 0"), std::string::npos) << neg;
  // Just above FLT_MAX still rounds to FLT_MAX (round to nearest), so it is accepted as it.
  const double edge = double(std::numeric_limits<float>::max()) * (1 + 1e-9);
  NpyArray a = parse_npy(npy_image("<f8", "False", "(2,)", doubles({edge, -edge})), "x");
  EXPECT_EQ(a.data, (std::vector<float>{std::numeric_limits<float>::max(),
                                        -std::numeric_limits<float>::max()}));
  // The first value that rounds to Inf is the midpoint FLT_MAX + half an ulp.
  EXPECT_NE(error_of(npy_image("<f8", "False", "(1,)", doubles({0x1.ffffffp+127}))).find("range"),
            std::string::npos);
  EXPECT_EQ(error_of(npy_image("<f8", "False", "(1,)", doubles({0x1.fffffefffffffp+127}))), "");
}

// End to end: apply refuses such a q with exit 1 (as for NaN) and writes no output.
TEST(Npy, ApplyRejectsFloat64OutsideFloatRange) {
  auto dir = std::filesystem::temp_directory_path() / "attn_npy_range";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<double> q(4 * 8, 0.25);
  q[13] = 1e300;
  std::ofstream(dir / "q.npy", std::ios::binary) << npy_image("<f8", "False", "(4, 8)", doubles(q));
  std::vector<float> kv(4 * 8, 0.5f);
  write_npy((dir / "kv.npy").string(), {4, 8}, kv.data());
  const std::string kvp = (dir / "kv.npy").string();
  test::CliResult r =
      test::run_cli("apply --variant full --q " + (dir / "q.npy").string() + " --k " + kvp +
                    " --v " + kvp + " --out " + (dir / "o.npy").string());
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("flat index 13 is outside the float32 range"), std::string::npos)
      << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "o.npy"));
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
