#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

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

std::filesystem::path scratch(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("attn_npy_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void save_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::string read_error(const std::string& path) {
  try {
    read_npy(path);
  } catch (const RuntimeError& e) {
    return e.what();
  }
  return "";
}

// Files are read in chunks of 65536 values; sizes that are not a multiple of it, and values
// that differ everywhere, show that no chunk is dropped, repeated or misplaced.
TEST(Npy, FilesSpanningManyChunksReadExactly) {
  const auto dir = scratch("chunks");
  const size_t n = 3 * 65536 + 77;
  std::vector<double> d(n);
  std::vector<float> f(n);
  for (size_t i = 0; i < n; ++i) d[i] = std::sin(0.001 * double(i)) * 1e3, f[i] = float(d[i]);
  const std::string shape = "(" + std::to_string(n) + ",)";
  save_bytes(dir / "d.npy", npy_image("<f8", "False", shape, doubles(d)));
  save_bytes(dir / "f.npy", npy_image("<f4", "False", shape, floats(f)));
  EXPECT_EQ(read_npy((dir / "d.npy").string()).data, f);
  EXPECT_EQ(read_npy((dir / "f.npy").string()).data, f);
  EXPECT_EQ(parse_npy(npy_image("<f8", "False", shape, doubles(d)), "x").data, f);
}

// The index in the message is the flat index in the file, not the index within a chunk, and
// the first bad value wins whichever kind it is.
TEST(Npy, BadValuesAreReportedAtTheirFlatIndexInLaterChunks) {
  const auto dir = scratch("bad_chunks");
  const size_t n = 3 * 65536;
  std::vector<float> f(n, 1.0f);
  f[150001] = std::numeric_limits<float>::quiet_NaN();
  save_bytes(dir / "f.npy", npy_image("<f4", "False", "(196608,)", floats(f)));
  EXPECT_NE(read_error((dir / "f.npy").string()).find("NaN or Inf at flat index 150001;"),
            std::string::npos);
  std::vector<double> d(n, 1.0);
  d[140000] = -1e300, d[150001] = std::numeric_limits<double>::infinity();
  save_bytes(dir / "d.npy", npy_image("<f8", "False", "(196608,)", doubles(d)));
  EXPECT_NE(read_error((dir / "d.npy").string()).find("value -1e+300 at flat index 140000 "),
            std::string::npos)
      << read_error((dir / "d.npy").string());
  d[140000] = 1.0;
  save_bytes(dir / "d.npy", npy_image("<f8", "False", "(196608,)", doubles(d)));
  EXPECT_NE(read_error((dir / "d.npy").string()).find("NaN or Inf at flat index 150001;"),
            std::string::npos);
}

// A file and the same bytes in memory fail with the same message (the file is checked
// against its size before the data buffer is allocated).
TEST(Npy, TruncatedFilesGiveTheSameErrorAsImages) {
  const auto dir = scratch("truncated");
  for (const std::string& image :
       {npy_image("<f4", "False", "(2, 3)", floats({1, 2, 3, 4})),
        npy_image("<f8", "False", "(1000000000, 1000)", doubles({1, 2})),
        std::string("\x93NUMPY\x01\x00\xff\x00{", 11),
        std::string("\x93NUMPY\x02\x00\xff\xff\xff\xff{", 13), std::string("\x93NUMPY\x02")}) {
    save_bytes(dir / "t.npy", image);
    const std::string from_file = read_error((dir / "t.npy").string());
    EXPECT_NE(from_file.find("truncated") + from_file.find("bad magic"), 2 * std::string::npos);
    EXPECT_EQ(from_file, (dir / "t.npy").string() + error_of(image).substr(5));
  }
}

// Pipes have no size up front: truncation shows as a short read, with the same numbers.
TEST(Npy, ReadsFromPipes) {
  const auto dir = scratch("pipe");
  const std::string fifo = (dir / "p.npy").string();
  // A reader that gives up early must fail this test, not kill the process with SIGPIPE.
  auto old_handler = std::signal(SIGPIPE, SIG_IGN);
  auto through_pipe = [&](const std::string& image) {
    std::filesystem::remove(fifo);
    EXPECT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << image; });
    std::string error;
    NpyArray a;
    try {
      a = read_npy(fifo);
    } catch (const RuntimeError& e) {
      error = e.what();
    }
    writer.join();
    return std::make_pair(a, error);
  };
  std::vector<float> f(100000);
  for (size_t i = 0; i < f.size(); ++i) f[i] = float(i);
  auto [whole, none] = through_pipe(npy_image("<f4", "False", "(100000,)", floats(f)));
  EXPECT_EQ(none, "");
  EXPECT_EQ(whole.data, f);
  auto [part, error] = through_pipe(npy_image("<f4", "False", "(100001,)", floats(f)));
  EXPECT_NE(error.find("truncated data: expected 400004 bytes, found 400000"), std::string::npos)
      << error;
  std::signal(SIGPIPE, old_handler);
}

// ...and the descriptor opened to find out is closed again.
TEST(Npy, DirectoryIsRuntimeErrorAndLeaksNoDescriptor) {
  const auto dir = scratch("dir");
  auto open_fds = [] {
    return std::distance(std::filesystem::directory_iterator("/proc/self/fd"), {});
  };
  const auto before = open_fds();
  for (int i = 0; i < 20; ++i)
    EXPECT_NE(read_error(dir.string()).find("is a directory"), std::string::npos);
  EXPECT_EQ(open_fds(), before);
}

// The destination is asked for with the file's shape before any data is read, and what it
// throws comes out unchanged.
TEST(Npy, ReadIntoAsksForTheShapeFirst) {
  const auto dir = scratch("into");
  const std::vector<float> f = {1, 2, 3, 4, 5, 6};
  write_npy((dir / "a.npy").string(), {1, 2, 3}, f.data());
  std::vector<float> buffer;
  std::vector<int64_t> asked;
  const auto shape = read_npy_into((dir / "a.npy").string(), [&](const std::vector<int64_t>& s) {
    asked = s;
    buffer.assign(6, -1.0f);
    return buffer.data();
  });
  EXPECT_EQ(asked, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(shape, asked);
  EXPECT_EQ(buffer, f);
  EXPECT_THROW(read_npy_into((dir / "a.npy").string(),
                             [](const std::vector<int64_t>&) -> float* { throw UsageError("no"); }),
               UsageError);
}

TEST(Npy, AtomicWriteOfPiecesLeavesOnlyTheFile) {
  const auto dir = scratch("pieces");
  const std::string path = (dir / "x.bin").string();
  write_file_atomic(path, {std::string_view("ab"), std::string_view(""), std::string_view("cde")});
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "abcde");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  EXPECT_THROW(write_file_atomic((dir / "missing" / "x").string(), {std::string_view("a")}),
               RuntimeError);
}

}  // namespace
}  // namespace attn
