#pragma once
// The admin console's shared secret: a token in a file only its owner may read. The server
// makes one (256 random bits, hex) at first start; the client reads the same file. A file that
// its group or others may read or write is refused, since anyone who can read it can steer
// the server.

#include <filesystem>
#include <string>

namespace ultraserve {

// $XDG_CONFIG_HOME/ultraserve/admin-token, or ~/.config/ultraserve/admin-token.
std::filesystem::path default_admin_token_path();

// Reads the token from `path`; throws std::runtime_error naming the file when it is missing,
// empty, or not owner-only (mode 0600 or stricter).
std::string read_admin_token(const std::filesystem::path& path);

// Reads the token, or creates the file (mode 0600, its directory 0700) with a fresh token when
// it does not exist. Throws like read_admin_token.
std::string load_or_create_admin_token(const std::filesystem::path& path);

// A fresh token: 256 random bits as 64 hex digits.
std::string make_admin_token();

// Equal strings, compared in time that does not depend on where they differ.
bool tokens_equal(const std::string& a, const std::string& b);

}  // namespace ultraserve
