// Byte-level BPE tokenizer (GPT-2 and Qwen2 families): loads vocab.json + merges.txt or a Hugging Face
// tokenizer.json, encodes text to token ids and decodes them back, saves all three formats.
//
//   BpeTokenizer tok = BpeTokenizer::load("models/gpt2");     // a folder or a tokenizer.json
//   std::vector<int32_t> ids = tok.encode("Hello world");     // {15496, 995}
//   std::string text = tok.decode(ids);                       // "Hello world"
//
// Tokens are held as raw byte strings; files spell them through GPT-2's byte-to-unicode map (every byte
// becomes a printable character, e.g. the space 0x20 becomes "Ġ"), except added tokens in tokenizer.json,
// which are spelled as their own text. Encoding: special (added) tokens are cut out first and emitted as
// their ids; every other span is pre-tokenised (io/pretokenize.h) and each piece is encoded by applying the
// merges in rank order, starting from one token per byte. Any byte string round-trips:
// decode(encode(x)) == x.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/pretokenize.h"

namespace moon::io {

// The special tokens every moon tokenizer has (appended after the vocabulary when a file lacks them).
inline constexpr const char* kSpecialTokens[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "</image>",
                                                 "<think>",       "</think>",     "<emb>",      "<pad>"};

// GPT-2's byte-to-unicode map: the file spelling of raw bytes, and back. unicode_to_bytes returns false
// (leaving `out` unspecified) if `s` has a character outside the map or is not valid UTF-8.
std::string bytes_to_unicode(std::string_view bytes);
bool unicode_to_bytes(std::string_view s, std::string& out);

class BpeTokenizer {
 public:
  // Builds a tokenizer from parts. `tokens[id]` is the bytes of token `id` (non-empty, all distinct, and
  // every single byte among them). `merges` are (left id, right id) in rank order; the concatenation of
  // each pair must be a token. `added` are ids of tokens matched verbatim in the text before
  // pre-tokenisation (valid UTF-8). The special tokens missing from `tokens` are appended. `origin` names
  // the source in error messages.
  static BpeTokenizer from_vocab(std::vector<std::string> tokens, const std::vector<std::pair<int32_t, int32_t>>& merges,
                                 const std::vector<int32_t>& added, PreTokenizer style,
                                 const std::string& origin = "tokenizer");

  // GPT-2 files: vocab.json ({"token": id}) and merges.txt (optional "#version" line, then "left right").
  static BpeTokenizer from_files(const std::string& vocab_json, const std::string& merges_txt,
                                 PreTokenizer style = PreTokenizer::Gpt2);
  // The same from contents; the names are used in error messages.
  static BpeTokenizer from_strings(std::string_view vocab_json, std::string_view merges_txt,
                                   const std::string& vocab_name, const std::string& merges_name,
                                   PreTokenizer style = PreTokenizer::Gpt2);

  // Hugging Face tokenizer.json: model.vocab, model.merges ("a b" strings or ["a", "b"] pairs), added_tokens,
  // and the pre_tokenizer recognised as GPT-2 or Qwen2 style.
  static BpeTokenizer from_tokenizer_json(const std::string& path);
  static BpeTokenizer from_tokenizer_json_string(std::string_view json, const std::string& name);

  // A folder (tokenizer.json, else vocab.json + merges.txt, else encoder.json + vocab.bpe) or a .json file.
  static BpeTokenizer load(const std::string& path);

  // Writes vocab.json, merges.txt and tokenizer.json into `folder` (created if needed), each atomically.
  void save(const std::string& folder) const;

  std::vector<int32_t> encode(std::string_view text) const;
  // Appends the ids of `text` (no special-token matching) to `out`.
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out) const;
  // Throws moon::Error for an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids) const;

  // The id of a special/added token, or of any token spelled exactly `text`; throws if there is none.
  int32_t special_id(std::string_view text) const;
  // The id of the token whose bytes are `bytes`, or -1.
  int32_t token_id(std::string_view bytes) const;
  const std::string& token_bytes(int32_t id) const;  // throws for an id outside the vocabulary

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  size_t merge_count() const { return merges_.size(); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  const std::vector<int32_t>& added_tokens() const { return added_; }
  PreTokenizer style() const { return style_; }

 private:
  struct MergeSlot {
    uint64_t key;  // (left << 32) | right; kEmpty for a free slot
    int32_t rank, result;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  // Validates, builds the lookup tables, appends missing specials. merge_where(rank) names a merge's entry.
  void finish(const std::string& origin, const std::function<std::string(size_t)>& merge_where);
  bool find_merge(int32_t left, int32_t right, int32_t& rank, int32_t& result) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::vector<int32_t>& ids) const;  // applies the merges in place

  std::vector<std::string> tokens_;                    // (vocab_size) id -> bytes
  std::vector<std::pair<int32_t, int32_t>> merges_;    // (merge_count) rank -> (left, right)
  std::vector<int32_t> added_;                         // ids matched verbatim before pre-tokenisation
  std::vector<int32_t> added_by_length_;               // the same, longest first (for matching)
  std::unordered_map<std::string, int32_t> by_bytes_;  // (vocab_size) bytes -> id
  std::vector<MergeSlot> merge_table_;                 // open addressing, power-of-two size
  int32_t byte_ids_[256] = {};                         // byte -> id of the single-byte token
  bool added_first_byte_[256] = {};                    // bytes that can start an added token
  PreTokenizer style_ = PreTokenizer::Gpt2;
  uint64_t serial_ = 0;                                // identifies this tokenizer's per-thread cache
};

}  // namespace moon::io
