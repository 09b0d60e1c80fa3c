#!/usr/bin/env bash
# Installs what attnbench needs from Debian 12 packages; does nothing when all are present.
# Every package the build or the tests use is named here, including those Debian only
# *recommends*: this script installs with --no-install-recommends, so a recommended package
# that the build needs would be missing on a fresh machine.
#   ocl-icd-opencl-dev  libdnnl-dev's CMake config (dnnl-config.cmake) calls find_package(OpenCL)
#   clang, libclang-rt-14-dev, libomp-14-dev  the libFuzzer targets (tests/fuzz) run by CTest:
#                       clang's OpenMP runtime is a separate package that clang does not pull in
#   librandom123-dev    Philox4x32-10, the one random number generator (attention/random.h)
set -euo pipefail
packages=(cmake g++ make git libdnnl-dev ocl-icd-opencl-dev libboost-program-options-dev
          libbenchmark-dev libgtest-dev googletest nlohmann-json3-dev python3-matplotlib
          clang libclang-rt-14-dev libomp-14-dev
          librandom123-dev)
packages+=(pybind11-dev python3-dev python3-numpy python3-pytest)  # Python module (python/) + its pytest suite
packages+=(slurm-wlm munge)  # tests/slurm/run.sh: a one-node Slurm cluster the test starts itself
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
