#pragma once
// The GPT-2 "byte-level" alphabet: every byte 0..255 stands for one printable Unicode
// character, so that a BPE vocabulary of *strings* can cover arbitrary *bytes* without
// control characters or spaces inside tokens. Printable Latin-1 bytes stand for themselves;
// the other 68 bytes (controls, space, DEL, NBSP, soft hyphen) are moved to U+0100.. in
// byte order. Example: the space byte 0x20 is "Ġ" (U+0120), "\n" is "Ċ" (U+010A).
//
// The table is the one HF tokenizers builds in `bytes_char()`; byte-level BPE vocabularies
// (GPT-2, Qwen, Llama 3, ...) are written in it, so it must be reproduced exactly.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ultraserve::byte_level {

// The code point that stands for byte `b`.
char32_t byte_to_char(uint8_t b);

// The UTF-8 encoding of byte_to_char(b) (one or two bytes).
std::string_view byte_to_utf8(uint8_t b);

// The byte a code point stands for, or nullopt when it is not in the alphabet.
std::optional<uint8_t> char_to_byte(char32_t c);

// Maps each byte of `bytes` to its character: "a b" -> "aĠb". Any input is accepted.
std::string encode(std::string_view bytes);

// The inverse of encode(): nullopt when `text` is not valid UTF-8 or holds a character
// outside the alphabet (a CJK character, say). Note that the alphabet contains printable
// ASCII and most of Latin-1, so "<|im_start|>" decodes to itself and "é" to the single
// byte 0xE9 - which is exactly what HF's ByteLevel decoder does with such tokens.
std::optional<std::string> decode(std::string_view text);

}  // namespace ultraserve::byte_level
