#pragma once
// Small Unicode helpers for the tokenizer. Input to these is always valid UTF-8 (encode()
// repairs it first).

#include <cstddef>
#include <string_view>

namespace ultraserve::tokenizer_detail {

// Decodes the code point starting at s[i] (valid UTF-8) and advances i.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t c = b0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) c = (c << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return c;
}

// Start of the code point that ends at s[end - 1].
inline size_t prev_code_point_start(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// The Unicode White_Space property: what Rust's char::is_whitespace, the Rust regex `\s`
// and Oniguruma's `\s` all match. (PCRE2's UCP `\s` adds U+180E, JavaScript adds U+FEFF
// and drops U+0085, Python's isspace adds U+001C..U+001F - hence this explicit list.)
inline bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}
// The same set as a PCRE2 class body, for translating `\s`.
inline constexpr std::string_view kWhiteSpaceClassBody =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

}  // namespace ultraserve::tokenizer_detail
