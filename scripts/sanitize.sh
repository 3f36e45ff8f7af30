#!/usr/bin/env bash
# Builds ultraserve CPU-only with sanitizers (g++) and runs tests under them:
#   scripts/sanitize.sh asan   AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer,
#                              into build-asan/, the whole CPU test suite (ctest), the client
#                              tests included (they start the sanitized `ultraserve serve`).
#   scripts/sanitize.sh tsan   ThreadSanitizer, into build-tsan/, the actor and serving tests
#                              (server_test, worker_fault_test, admin_test, net_test,
#                              batch_planner_test, client.*).
#   scripts/sanitize.sh [all]  both, asan first.
# Any finding fails the test it happens in (halt_on_error, -fno-sanitize-recover=undefined);
# child processes (the ultraserve binary started by tests) inherit the options below.
# Suppressions, only for third-party code: tests/sanitizers/*.supp. Environment: JOBS (build
# and ctest parallelism, default 2), ULTRASERVE_TEST_TIME_SCALE (default 4 for asan, 8 for
# tsan: the tests' waiting limits are multiplied by it, never their expectations).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case "$mode" in asan | tsan | all) ;; *) echo "usage: scripts/sanitize.sh [asan|tsan|all]" >&2; exit 2 ;; esac
jobs=${JOBS:-2}
cmake_args=()
supp=$PWD/tests/sanitizers
scripts/setup.sh

configure_and_build() {  # configure_and_build DIR SANITIZERS [CMAKE-ARG...] [--target T...]
  local dir=$1 sanitizers=$2
  shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DULTRASERVE_CUDA=OFF \
    -DULTRASERVE_SANITIZE="$sanitizers" "${cmake_args[@]}" >/dev/null
  cmake --build "$dir" -j"$jobs" "$@"
}

# ThreadSanitizer sees only what is instrumented: Debian's CAF is not, so every hand-off through
# CAF's own atomics (mailboxes, the work-stealing queues: how an actor's messages and state move
# between scheduler threads) is invisible to it, and it reports nearly every actor as racing with
# itself. So tsan builds CAF itself, from the Debian source package of the installed libcaf-dev
# (same version, same build_config.hpp, same headers), with -fsanitize=thread, into
# build-tsan/caf/install, once; ultraserve's tsan build links that instead of /usr/lib's.
build_tsan_caf() {
  local root=$PWD/build-tsan/caf
  local version upstream
  version=$(dpkg-query -W -f='${source:Version}' libcaf-dev)  # e.g. 0.17.6-2.1
  upstream=${version%-*}
  local stamp=$root/install/.built-$version
  [ -f "$stamp" ] && return
  mkdir -p "$root/apt/lists/partial"
  local tarball=$root/actor-framework_$upstream.orig.tar.gz
  if [ ! -f "$tarball" ]; then
    echo "sanitize: fetching the Debian source of CAF (actor-framework $version)"
    # A private apt configuration: a deb-src list for this alone, the system's untouched.
    echo "deb-src http://deb.debian.org/debian bookworm main" >"$root/apt/sources.list"
    local apt=(-o Dir::Etc::SourceList="$root/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
               -o Dir::State::Lists="$root/apt/lists" -o Dir::Cache="$root/apt/cache" -o Debug::NoLocking=1)
    apt-get "${apt[@]}" update -qq
    # Only the upstream tarball is needed (its one Debian patch is applied below); a mirror that
    # lacks the .debian.tar.xz makes apt-get fail after fetching the rest, so check for the tarball.
    (cd "$root" && apt-get "${apt[@]}" source --download-only "actor-framework=$version" >/dev/null 2>&1) || true
    [ -f "$tarball" ] && [ -f "$root/actor-framework_$version.dsc" ] ||
      { echo "sanitize: could not fetch actor-framework $version" >&2; exit 1; }
    local sum
    sum=$(awk '/^Checksums-Sha256:/ {s=1; next} /^[^ ]/ {s=0} s && $3 ~ /orig.tar.gz$/ {print $1}' \
      "$root/actor-framework_$version.dsc")
    echo "$sum  $tarball" | sha256sum --check --status ||
      { echo "sanitize: $tarball does not match its .dsc" >&2; exit 1; }
  fi
  local src=$root/actor-framework-$upstream
  rm -rf "$src" "$root/build" "$root/install"
  tar -xzf "$tarball" -C "$root"
  # Debian's patch: receive_buffer.hpp includes <limits> (for GCC 12); same header as /usr/include.
  grep -q '#include <limits>' "$src/libcaf_io/caf/io/network/receive_buffer.hpp" ||
    sed -i 's|^#include <cstring>|#include <cstring>\n#include <limits>|' "$src/libcaf_io/caf/io/network/receive_buffer.hpp"
  cmake -S "$src" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$root/install" \
    -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" -DCAF_LOG_LEVEL=QUIET \
    -DCAF_NO_EXAMPLES=yes -DCAF_NO_UNIT_TESTS=yes -DCAF_NO_TOOLS=yes -DCAF_NO_PYTHON=yes \
    -DCAF_NO_OPENCL=yes -DCAF_NO_SUMMARY=yes >/dev/null
  cmake --build "$root/build" -j"$jobs"
  cmake --install "$root/build" >/dev/null
  cmp -s "$root/install/include/caf/detail/build_config.hpp" /usr/include/caf/detail/build_config.hpp ||
    { echo "sanitize: the CAF built for tsan is configured unlike Debian's" >&2; exit 1; }
  touch "$stamp"
}

run_asan() {
  local start=$SECONDS
  # UBSan runs inside the same processes; its options apply to every check it makes.
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1:detect_invalid_pointer_pairs=0:print_summary=1"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$supp/ubsan.supp"
  export ULTRASERVE_TEST_TIME_SCALE=${ULTRASERVE_TEST_TIME_SCALE:-4}
  configure_and_build build-asan address,undefined
  local built=$SECONDS
  ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 1800
  echo "sanitize: asan build $((built - start))s, tests $((SECONDS - built))s"
}

run_tsan() {
  local start=$SECONDS
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4:suppressions=$supp/tsan.supp:print_suppressions=0"
  export ULTRASERVE_TEST_TIME_SCALE=${ULTRASERVE_TEST_TIME_SCALE:-8}
  build_tsan_caf
  local caf=$PWD/build-tsan/caf/install
  cmake_args=(-DCAF_INCLUDE_DIR="$caf/include" -DCAF_CORE_LIBRARY="$caf/lib/libcaf_core.so"
              -DCAF_IO_LIBRARY="$caf/lib/libcaf_io.so" -DCAF_OPENSSL_LIBRARY="$caf/lib/libcaf_openssl.so")
  configure_and_build build-tsan thread --target ultraserve --target server_test --target worker_fault_test \
    --target admin_test --target net_test --target batch_planner_test
  local built=$SECONDS
  # The labels are the test binaries' names (tests/CMakeLists.txt); the client tests' is "client".
  ctest --test-dir build-tsan --output-on-failure -j"$jobs" --timeout 1800 \
    -L '^(server_test|worker_fault_test|admin_test|net_test|batch_planner_test|client)$'
  echo "sanitize: tsan build $((built - start))s, tests $((SECONDS - built))s"
}

case "$mode" in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all) (run_asan); (run_tsan) ;;  # each in a subshell: its options stay its own
esac
