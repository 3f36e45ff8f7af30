#include "config/admin_token.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

namespace ultraserve {
namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& why) {
  throw std::runtime_error(path.string() + ": " + why);
}

}  // namespace

std::string make_admin_token() {
  std::random_device rd;  // /dev/urandom on Linux
  static const char hex[] = "0123456789abcdef";
  std::string token;
  for (int i = 0; i < 8; ++i) {
    uint32_t word = rd();
    for (int j = 0; j < 8; ++j, word >>= 4) token += hex[word & 15];
  }
  return token;
}

std::filesystem::path default_admin_token_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return std::filesystem::path(xdg) / "ultraserve/admin-token";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".config/ultraserve/admin-token";
}

std::string read_admin_token(const std::filesystem::path& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) fail(path, std::string("cannot read the admin token: ") + std::strerror(errno));
  if ((st.st_mode & 077) != 0)
    fail(path, "the admin token file must be readable by its owner only (chmod 600 " + path.string() + ")");
  std::ifstream in(path);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (!in && !in.eof()) fail(path, "cannot read the admin token");
  if (token.empty()) fail(path, "the admin token file is empty");
  return token;
}

std::string load_or_create_admin_token(const std::filesystem::path& path) {
  if (std::filesystem::exists(path)) return read_admin_token(path);
  const auto dir = path.parent_path();
  if (!dir.empty() && !std::filesystem::exists(dir)) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) fail(dir, "cannot create the admin token's directory: " + ec.message());
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
  }
  // O_EXCL: if another process made the file meanwhile, read theirs instead of overwriting it.
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return read_admin_token(path);
    fail(path, std::string("cannot create the admin token: ") + std::strerror(errno));
  }
  const std::string token = make_admin_token();
  const std::string line = token + "\n";
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  close(fd);
  if (!written) fail(path, "cannot write the admin token");
  return token;
}

bool tokens_equal(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

}  // namespace ultraserve
