#include "model/byte_level.h"

#include <array>

namespace ultraserve::byte_level {
namespace {

// Bytes that are printable in Latin-1 keep their own code point; HF (after GPT-2's
// encoder.py) lists them as the ranges '!'..'~', '¡'..'¬', '®'..'ÿ'.
constexpr bool keeps_own_code_point(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<char32_t, 256> chars{};
  std::array<char, 512> utf8{};  // two bytes per entry; length in utf8_len
  std::array<uint8_t, 256> utf8_len{};
  // Every alphabet code point is below U+0144 (0x100 + 68), so a flat table suffices.
  static constexpr char32_t kMaxChar = 0x100 + 68;
  std::array<int16_t, kMaxChar> byte_of{};

  Tables() {
    byte_of.fill(-1);
    char32_t next_shifted = 0x100;  // the bytes that are not printable, in byte order
    for (unsigned b = 0; b < 256; ++b) {
      char32_t c = keeps_own_code_point(b) ? char32_t(b) : next_shifted++;
      chars[b] = c;
      byte_of[c] = int16_t(b);
      if (c < 0x80) {
        utf8[2 * b] = char(c);
        utf8_len[b] = 1;
      } else {  // all alphabet characters are below U+0800: two UTF-8 bytes
        utf8[2 * b] = char(0xC0 | (c >> 6));
        utf8[2 * b + 1] = char(0x80 | (c & 0x3F));
        utf8_len[b] = 2;
      }
    }
  }
};

const Tables& tables() {
  static const Tables t;  // thread-safe lazy init (magic statics)
  return t;
}

}  // namespace

char32_t byte_to_char(uint8_t b) { return tables().chars[b]; }

std::string_view byte_to_utf8(uint8_t b) {
  const Tables& t = tables();
  return {&t.utf8[2 * b], t.utf8_len[b]};
}

std::optional<uint8_t> char_to_byte(char32_t c) {
  const Tables& t = tables();
  if (c >= Tables::kMaxChar || t.byte_of[c] < 0) return std::nullopt;
  return uint8_t(t.byte_of[c]);
}

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out.append(&t.utf8[2 * b], t.utf8_len[b]);
  return out;
}

std::optional<std::string> decode(std::string_view text) {
  const Tables& t = tables();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    auto c0 = static_cast<unsigned char>(text[i]);
    char32_t c;
    if (c0 < 0x80) {
      c = c0;
      i += 1;
    } else if (c0 >= 0xC2 && c0 <= 0xDF && i + 1 < text.size() &&
               (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80) {
      // Only (non-overlong) two-byte sequences can be in the alphabet; anything else is
      // "not ours".
      c = (char32_t(c0 & 0x1F) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    if (c >= Tables::kMaxChar || t.byte_of[c] < 0) return std::nullopt;
    out.push_back(char(t.byte_of[c]));
  }
  return out;
}

}  // namespace ultraserve::byte_level
