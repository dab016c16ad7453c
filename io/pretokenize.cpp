// Hand-written matchers for the GPT-2 and Qwen2 pre-tokenisation regexes (see pretokenize.h). Each
// function tries the regex's alternatives in order at one position, as a backtracking regex engine would.
#include "io/pretokenize.h"

#include "io/unicode_class.h"

namespace moon::io {

namespace {

// What a character is for the regexes: \p{L}, \p{N}, \s, or none of them ("other").
enum class Kind { Letter, Number, Space, Other };

struct Char {
  Kind kind;
  int len;
  uint32_t cp;
};

// The character at byte i (i < text.size()).
inline Char char_at(std::string_view t, size_t i) {
  const auto b = static_cast<uint8_t>(t[i]);
  Utf8Char c = b < 0x80 ? Utf8Char{b, 1, true} : decode_utf8(t.data() + i, t.size() - i);
  const uint8_t bits = unicode_class(c.cp);
  const Kind k = (bits & kClassLetter)   ? Kind::Letter
                 : (bits & kClassNumber) ? Kind::Number
                 : (bits & kClassSpace)  ? Kind::Space
                                         : Kind::Other;
  return {k, c.len, c.cp};
}

// Advances from j over characters of kind k; returns the first byte past the run.
inline size_t run_of(std::string_view t, size_t j, Kind k) {
  while (j < t.size()) {
    const Char c = char_at(t, j);
    if (c.kind != k) break;
    j += c.len;
  }
  return j;
}

// \s+(?!\S) then \s+ at i (t[i] is whitespace): the whitespace run, less its last character when a
// non-space follows and the run has more than one character.
size_t whitespace_end(std::string_view t, size_t i) {
  size_t j = i, last = i;
  while (j < t.size()) {
    const Char c = char_at(t, j);
    if (c.kind != Kind::Space) break;
    last = j;
    j += c.len;
  }
  if (j == t.size()) return j;  // (?!\S) holds at the end of the text
  return last > i ? last : j;   // back off one character so that whitespace follows, else plain \s+
}

inline bool lower_is(char c, char lower) { return c == lower || c == lower - 'a' + 'A'; }

// GPT-2's contractions ('s 't 're 've 'm 'll 'd), case-sensitive; 0 if none at i.
size_t gpt2_contraction(std::string_view t, size_t i) {
  if (t[i] != '\'' || i + 1 >= t.size()) return 0;
  const char a = t[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
  if (i + 2 < t.size()) {
    const char b = t[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
  }
  return 0;
}

// Qwen2's contractions, case-insensitive as (?i:...) is (s also folds to U+017F LONG S); 0 if none.
size_t qwen2_contraction(std::string_view t, size_t i) {
  if (t[i] != '\'' || i + 1 >= t.size()) return 0;
  const char a = t[i + 1];
  if (lower_is(a, 's') || lower_is(a, 't') || lower_is(a, 'm') || lower_is(a, 'd')) return i + 2;
  if (i + 2 < t.size() && static_cast<uint8_t>(a) == 0xC5 && static_cast<uint8_t>(t[i + 2]) == 0xBF) return i + 3;
  if (i + 2 < t.size()) {
    const char b = t[i + 2];
    if ((lower_is(a, 'r') && lower_is(b, 'e')) || (lower_is(a, 'v') && lower_is(b, 'e')) ||
        (lower_is(a, 'l') && lower_is(b, 'l')))
      return i + 3;
  }
  return 0;
}

size_t gpt2_end(std::string_view t, size_t i) {
  if (size_t e = gpt2_contraction(t, i)) return e;
  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": an optional ASCII space, then a run of one kind
  if (t[i] == ' ' && i + 1 < t.size()) {
    const Char next = char_at(t, i + 1);
    if (next.kind != Kind::Space) return run_of(t, i + 1 + next.len, next.kind);
  }
  const Char c = char_at(t, i);
  if (c.kind != Kind::Space) return run_of(t, i + c.len, c.kind);
  return whitespace_end(t, i);
}

inline bool is_newline(char c) { return c == '\r' || c == '\n'; }

size_t qwen2_end(std::string_view t, size_t i) {
  if (size_t e = qwen2_contraction(t, i)) return e;
  const Char c = char_at(t, i);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c.kind == Kind::Letter) return run_of(t, i + c.len, Kind::Letter);
  if (c.kind != Kind::Number && !is_newline(t[i]) && i + c.len < t.size()) {
    const Char next = char_at(t, i + c.len);
    if (next.kind == Kind::Letter) return run_of(t, i + c.len + next.len, Kind::Letter);
  }
  // \p{N}: one digit at a time
  if (c.kind == Kind::Number) return i + c.len;
  // " ?[^\s\p{L}\p{N}]+[\r\n]*"
  size_t other_start = 0;
  bool other = false;
  if (t[i] == ' ' && i + 1 < t.size() && char_at(t, i + 1).kind == Kind::Other) {
    other_start = i + 1, other = true;
  } else if (c.kind == Kind::Other) {
    other_start = i, other = true;
  }
  if (other) {
    size_t j = run_of(t, other_start, Kind::Other);
    while (j < t.size() && is_newline(t[j])) ++j;
    return j;
  }
  // \s*[\r\n]+: the whitespace run up to and including its last newline
  size_t j = i, after_newline = 0;
  while (j < t.size()) {
    const Char w = char_at(t, j);
    if (w.kind != Kind::Space) break;
    j += w.len;
    if (is_newline(t[j - 1])) after_newline = j;
  }
  if (after_newline) return after_newline;
  return whitespace_end(t, i);
}

}  // namespace

const char* pretokenizer_name(PreTokenizer style) { return style == PreTokenizer::Gpt2 ? "gpt2" : "qwen2"; }

const char* pretokenizer_regex(PreTokenizer style) {
  if (style == PreTokenizer::Gpt2) return R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  return R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}

size_t next_pretoken_end(std::string_view text, size_t pos, PreTokenizer style) {
  return style == PreTokenizer::Gpt2 ? gpt2_end(text, pos) : qwen2_end(text, pos);
}

std::vector<std::string_view> pretokenize(std::string_view text, PreTokenizer style) {
  std::vector<std::string_view> pieces;
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = next_pretoken_end(text, pos, style);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

}  // namespace moon::io
