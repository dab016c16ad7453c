// Pre-tokenisation: splitting text into the "words" that BPE then encodes one by one, with hand-written
// matchers that reproduce exactly (leftmost alternative first, greedy, with the backtracking of the
// lookahead) the regexes of GPT-2 and Qwen2:
//   GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
//          \s+(?!\S)|\s+
// Every byte belongs to exactly one piece (invalid UTF-8 bytes count as U+FFFD, a symbol), so joining the
// pieces gives back the text.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace moon::io {

enum class PreTokenizer { Gpt2, Qwen2 };

const char* pretokenizer_name(PreTokenizer style);  // "gpt2" or "qwen2"
const char* pretokenizer_regex(PreTokenizer style);  // the regex above (Hugging Face spelling)

// The end (exclusive byte offset) of the piece that starts at `pos` (pos < text.size()); always > pos.
size_t next_pretoken_end(std::string_view text, size_t pos, PreTokenizer style);

// All pieces of `text`, in order; views into `text`.
std::vector<std::string_view> pretokenize(std::string_view text, PreTokenizer style);

}  // namespace moon::io
