// One writer per results directory: a sweep or run with --out owns DIR for its whole life, so
// two concurrent sweeps cannot silently interleave (the last rename used to win).
#pragma once

#include <string>

namespace attnbench {

class OutputDirLock {
 public:
  // Creates DIR, takes an exclusive flock on DIR/.attnbench.lock (RuntimeError naming the
  // directory when another process holds it, or when DIR is not writable) and then removes the
  // result temporaries (results.{json,csv}.tmp.<pid>) that killed writers left behind.
  explicit OutputDirLock(const std::string& dir);
  ~OutputDirLock();
  OutputDirLock(const OutputDirLock&) = delete;
  OutputDirLock& operator=(const OutputDirLock&) = delete;
  int stale_removed() const { return stale_removed_; }

 private:
  int fd_ = -1;
  int stale_removed_ = 0;
};

// UsageError when DIR already holds results and the caller asked neither to resume them nor
// to overwrite them.
void check_may_write_results(const std::string& dir, bool resume, bool overwrite);

// Removes DIR/results.{json,csv}.tmp.<pid> whose process is gone; returns how many. Call it
// only while holding the directory's lock (a live writer's temporary is never touched).
int remove_stale_temporaries(const std::string& dir);

}  // namespace attnbench
