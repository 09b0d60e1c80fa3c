// Tensor storage: alignment, and the transparent-huge-page advice for large tensors.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "attention/tensor.h"

namespace attn {
namespace {

constexpr uintptr_t kHugePage = uintptr_t(2) << 20;

uintptr_t address(const Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data());
}

// The "THPeligible" field of the /proc/self/smaps mapping that holds `p` ("" if not found).
std::string thp_eligible(uintptr_t p) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-' && line.find(':') > line.find(' ')) {
      inside = lo <= p && p < hi;
    } else if (inside && line.rfind("THPeligible:", 0) == 0) {
      return line.substr(line.find_first_not_of(' ', 12));
    }
  }
  return "";
}

TEST(Tensor, LargeTensorsStartOnAHugePageAndSmallOnesOn64Bytes) {
  Tensor big(1, 2, 1024, 256);  // exactly 2 MiB
  EXPECT_EQ(address(big) % kHugePage, 0u);
  Tensor bigger(1, 8, 2048, 64);  // 4 MiB
  EXPECT_EQ(address(bigger) % kHugePage, 0u);
  Tensor small(1, 1, 3, 5);
  EXPECT_EQ(address(small) % 64, 0u);
  // Moving keeps the deleter's alignment with the buffer (a mismatch would be undefined).
  Tensor moved = std::move(big);
  EXPECT_EQ(address(moved) % kHugePage, 0u);
  moved = Tensor(1, 1, 4, 4);
  EXPECT_EQ(address(moved) % 64, 0u);
}

// Where the kernel offers transparent huge pages on request, a large tensor's memory is marked
// eligible, so filling it takes one fault per 2 MiB.
TEST(Tensor, LargeTensorsAreAdvisedAsHugePages) {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes((std::istreambuf_iterator<char>(mode)), {});
  if (modes.find("[never]") != std::string::npos || modes.empty())
    GTEST_SKIP() << "transparent huge pages are off here";
  Tensor t(1, 8, 2048, 64);
  t.fill(1.0f);
  EXPECT_EQ(thp_eligible(address(t)), "1");
}

}  // namespace
}  // namespace attn
