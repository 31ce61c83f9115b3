#!/usr/bin/env bash
# Installs what a fresh machine lacks for building torua, and prints the environment the build needs.
#
# Usage: eval "$(scripts/setup.sh)"
#
# Kuzu (linked by the root package) compiles ~17 minutes of C++ through CMake. We install cmake and ccache
# when missing and route CMake's compilers through ccache, so that a new target directory (a fresh clone,
# CI) rebuilds Kuzu from the cache in a few minutes instead of from scratch. Headless Chromium and its
# driver run the operator console's browser test (tests/console_process.rs).
set -euo pipefail

log() { echo "setup: $*" >&2; }

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ccache >/dev/null 2>&1 || need+=(ccache)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if ((${#need[@]})); then
  log "installing ${need[*]} (apt-get)"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2 || log "apt-get update failed; trying to install from the current lists"
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; then
    log "could not install ${need[*]}; install them by hand (they are Debian packages) and rerun"
    exit 1
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is not on PATH; install Rust (https://rustup.rs) and rerun"
  exit 1
fi

# ccache: used by CMake (Kuzu's C++ build). The base dir makes absolute paths under it cache-neutral, so
# two target directories share cache entries.
echo "export CMAKE_C_COMPILER_LAUNCHER=ccache"
echo "export CMAKE_CXX_COMPILER_LAUNCHER=ccache"
echo "export CCACHE_BASEDIR=/"
# Kuzu compiles with debug info under our profile; without this the working directory (which differs
# per target directory) would be part of every cache key.
echo "export CCACHE_NOHASHDIR=1"
echo "export CCACHE_MAXSIZE=\${CCACHE_MAXSIZE:-10G}"
# Kuzu's build uses every core it is given; two is what this machine has.
echo "export CMAKE_BUILD_PARALLEL_LEVEL=\${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
