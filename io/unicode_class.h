// Unicode character classes for the tokenizer's pre-tokenisation (\p{L}, \p{N}, \s as JavaScript's regex
// engine defines them; see scripts/gen_unicode_tables.js), and bounds-checked UTF-8 decoding/encoding that
// tolerates invalid input: byte-level BPE must accept any byte string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moon::io {

// Class bits of a code point: any combination of these (in practice at most one is set).
enum UnicodeClass : uint8_t { kClassNone = 0, kClassLetter = 1, kClassNumber = 2, kClassSpace = 4 };

// The class bits of `cp` (0 for unassigned, punctuation, symbols, surrogates, > U+10FFFF).
uint8_t unicode_class(uint32_t cp);
inline bool is_letter(uint32_t cp) { return unicode_class(cp) & kClassLetter; }
inline bool is_number(uint32_t cp) { return unicode_class(cp) & kClassNumber; }
inline bool is_space(uint32_t cp) { return unicode_class(cp) & kClassSpace; }

// The Unicode version of the generated tables (the node that generated them).
const char* unicode_tables_version();

// One decoded character: its code point and how many bytes it took. Invalid UTF-8 (a stray continuation
// byte, a truncated sequence, an overlong form, a surrogate, > U+10FFFF) decodes as U+FFFD of length 1,
// so the caller moves on by one byte and no byte is ever lost.
struct Utf8Char {
  uint32_t cp;
  int len;
  bool valid;
};

// Decodes the character at p[0]; reads at most `n` bytes (n >= 1).
Utf8Char decode_utf8(const char* p, size_t n);

// Appends the UTF-8 form of `cp` (cp <= U+10FFFF, not a surrogate; otherwise U+FFFD) to `out`.
void append_utf8(uint32_t cp, std::string& out);

// True if the whole string is valid UTF-8.
bool is_valid_utf8(const char* p, size_t n);

}  // namespace moon::io
