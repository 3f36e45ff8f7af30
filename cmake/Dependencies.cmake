# Every dependency comes from a Debian 12 package (scripts/setup.sh installs them).

find_package(Threads REQUIRED)
find_package(simdjson REQUIRED CONFIG)
find_package(GTest REQUIRED)
find_package(Boost 1.81 REQUIRED CONFIG)  # not EXACT: Debian ships it as 1.81.0

# CAF 0.17 ships neither a CMake config nor a pkg-config file.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
find_library(CAF_CORE_LIBRARY caf_core REQUIRED)
find_library(CAF_IO_LIBRARY caf_io REQUIRED)
add_library(caf::core UNKNOWN IMPORTED)
set_target_properties(caf::core PROPERTIES
  IMPORTED_LOCATION "${CAF_CORE_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES Threads::Threads)
add_library(caf::io UNKNOWN IMPORTED)
set_target_properties(caf::io PROPERTIES
  IMPORTED_LOCATION "${CAF_IO_LIBRARY}"
  INTERFACE_LINK_LIBRARIES caf::core)
# TLS for the admin console's middleman connections (Debian's libcaf-dev ships it).
find_library(CAF_OPENSSL_LIBRARY caf_openssl REQUIRED)
add_library(caf::openssl UNKNOWN IMPORTED)
set_target_properties(caf::openssl PROPERTIES
  IMPORTED_LOCATION "${CAF_OPENSSL_LIBRARY}"
  INTERFACE_LINK_LIBRARIES caf::io)

# libedit (BSD licence): line editing, history and completion for the admin shell.
find_path(LIBEDIT_INCLUDE_DIR editline/readline.h REQUIRED)
find_library(LIBEDIT_LIBRARY edit REQUIRED)
add_library(libedit::libedit UNKNOWN IMPORTED)
set_target_properties(libedit::libedit PROPERTIES
  IMPORTED_LOCATION "${LIBEDIT_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${LIBEDIT_INCLUDE_DIR}")

find_path(PCRE2_INCLUDE_DIR pcre2.h REQUIRED)
find_library(PCRE2_LIBRARY pcre2-8 REQUIRED)
add_library(pcre2::pcre2 UNKNOWN IMPORTED)
set_target_properties(pcre2::pcre2 PROPERTIES
  IMPORTED_LOCATION "${PCRE2_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${PCRE2_INCLUDE_DIR}")

find_path(UTF8PROC_INCLUDE_DIR utf8proc.h REQUIRED)
find_library(UTF8PROC_LIBRARY utf8proc REQUIRED)
add_library(utf8proc::utf8proc UNKNOWN IMPORTED)
set_target_properties(utf8proc::utf8proc PROPERTIES
  IMPORTED_LOCATION "${UTF8PROC_LIBRARY}"
  INTERFACE_INCLUDE_DIRECTORIES "${UTF8PROC_INCLUDE_DIR}")
