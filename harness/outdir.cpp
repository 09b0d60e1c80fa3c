#include "harness/outdir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "attention/tensor.h"

namespace attnbench {

namespace fs = std::filesystem;

namespace {

// kill(pid, 0) fails with ESRCH only when no such process exists (EPERM: alive, not ours).
bool process_alive(long pid) {
  return pid > 0 && (kill(pid_t(pid), 0) == 0 || errno == EPERM);
}

// The pid of "results.json.tmp.<pid>" / "results.csv.tmp.<pid>" (write_file_atomic's
// naming), or 0 for any other file.
long temporary_owner(const std::string& name) {
  for (const char* stem : {"results.json.tmp.", "results.csv.tmp."}) {
    const size_t len = std::strlen(stem);
    if (name.compare(0, len, stem) != 0 || name.size() == len) continue;
    char* end = nullptr;
    const long pid = std::strtol(name.c_str() + len, &end, 10);
    return *end == '\0' ? pid : 0;
  }
  return 0;
}

}  // namespace

int remove_stale_temporaries(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const long pid = temporary_owner(e.path().filename().string());
    if (pid == 0 || pid == long(getpid()) || process_alive(pid)) continue;
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

OutputDirLock::OutputDirLock(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw attn::RuntimeError("cannot create output directory " + dir + ": " + ec.message());
  // A probe file, not access(): root passes access() on a read-only mount, and an existing
  // lock file opens for writing even in a read-only directory.
  const std::string probe = dir + "/.attnbench.probe." + std::to_string(getpid());
  const int p = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (p < 0)
    throw attn::RuntimeError("cannot write to output directory " + dir + " (" +
                             std::strerror(errno) + "); choose a writable --out");
  ::close(p);
  ::unlink(probe.c_str());
  const std::string path = dir + "/.attnbench.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw attn::RuntimeError("cannot write to output directory " + dir + " (" +
                             std::strerror(errno) + "); choose a writable --out");
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw attn::RuntimeError(err == EWOULDBLOCK
                                 ? "output directory " + dir +
                                       " is in use by another attnbench process (it holds " + path +
                                       "); wait for it to finish or choose another --out"
                                 : "cannot lock " + path + ": " + std::strerror(err));
  }
  stale_removed_ = remove_stale_temporaries(dir);
}

OutputDirLock::~OutputDirLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

void check_may_write_results(const std::string& dir, bool resume, bool overwrite) {
  if (resume || overwrite) return;
  for (const char* f : {"results.json", "results.csv"})
    if (fs::exists(dir + "/" + f))
      throw attn::UsageError("output directory " + dir + " already holds results (" + f +
                             "); pass --resume to continue them or --overwrite to replace them");
}

}  // namespace attnbench
