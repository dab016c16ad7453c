// Byte-level BPE: building the lookup tables, encoding (special tokens, pre-tokenisation, merges by rank
// with a per-thread word cache), decoding, and the GPT-2 / Hugging Face file formats (read and write).
#include "io/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <queue>

#include "io/file_util.h"
#include "io/unicode_class.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

// ---- GPT-2's byte-to-unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes take
// the code points 256, 257, ... in byte order.
struct ByteMap {
  uint32_t to_cp[256];
  int16_t from_cp[512];  // code point -> byte, -1 where none
  ByteMap() {
    std::fill(std::begin(from_cp), std::end(from_cp), int16_t{-1});
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap kByteMap;

std::atomic<uint64_t> g_next_serial{1};

// ---- the per-thread word cache: direct-mapped slots tagged with the owning tokenizer's serial.
struct CacheSlot {
  uint64_t owner = 0;
  std::string word;
  std::vector<int32_t> ids;
};
constexpr size_t kCacheSlots = 1 << 14;
constexpr size_t kCacheMaxWord = 64;  // longer words are encoded without the cache

CacheSlot& cache_slot(std::string_view word) {
  thread_local std::vector<CacheSlot> slots(kCacheSlots);
  return slots[std::hash<std::string_view>{}(word) & (kCacheSlots - 1)];
}

inline uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
inline size_t hash_key(uint64_t key, size_t mask) { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> 20) & mask; }

using json = nlohmann::json;

json parse_json(std::string_view text, const std::string& name) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(name, ": malformed JSON: ", e.what());
  }
}

// The bytes a file spells `s` as: through the byte map, or (for added tokens written as plain text that is
// outside the map) its own UTF-8.
std::string spelled_bytes(const std::string& s) {
  std::string bytes;
  if (unicode_to_bytes(s, bytes)) return bytes;
  return s;
}

// Short, printable form of a token for error messages.
std::string show_token(std::string_view s) {
  std::string out = "\"";
  for (char c : s.substr(0, 40)) {
    const auto b = static_cast<uint8_t>(c);
    if (b < 0x20 || b == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", b);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + (s.size() > 40 ? "...\"" : "\"");
}

// Collects (spelling, id) entries, then checks that the ids run 0..N-1; names the file in errors. Memory
// stays proportional to the entries whatever ids a corrupted file claims.
struct VocabBuilder {
  std::string name;
  std::vector<std::string> spelling;                  // (entries) in file order
  std::unordered_map<int64_t, size_t> by_id;          // id -> entry
  std::unordered_map<std::string, int32_t> ids;       // spelling -> id

  void add(const std::string& token, const json& value, const std::string& where) {
    MOON_CHECK(value.is_number_integer(), name, ": ", where, ": the id of ", show_token(token), " must be an integer, got ",
               value.dump());
    const int64_t id = value.get<int64_t>();
    MOON_CHECK(id >= 0 && id < (int64_t{1} << 24), name, ": ", where, ": id ", id, " of ", show_token(token),
               " is out of range (0 .. 16777215)");
    auto same_id = by_id.find(id);
    if (same_id != by_id.end()) {
      MOON_CHECK(spelling[same_id->second] == token, name, ": ", where, ": id ", id, " is used by both ",
                 show_token(spelling[same_id->second]), " and ", show_token(token));
      return;
    }
    auto [it, inserted] = ids.emplace(token, static_cast<int32_t>(id));
    MOON_CHECK(inserted, name, ": ", where, ": token ", show_token(token), " has two ids, ", it->second, " and ", id);
    by_id.emplace(id, spelling.size());
    spelling.push_back(token);
  }

  // The spelling of `id`, or nullptr.
  const std::string* find(int64_t id) const {
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &spelling[it->second];
  }

  // The token bytes by id; every id below the largest must be present.
  std::vector<std::string> finish() const {
    MOON_CHECK(!spelling.empty(), name, ": the vocabulary is empty");
    std::vector<std::string> tokens(spelling.size());
    for (size_t id = 0; id < spelling.size(); ++id) {
      const std::string* s = find(static_cast<int64_t>(id));
      MOON_CHECK(s != nullptr, name, ": no token has id ", id, " (ids must run 0 .. ", spelling.size() - 1,
                 " without gaps)");
      tokens[id] = spelled_bytes(*s);
    }
    return tokens;
  }

  // The id of a token named in a merge; `where` names the merge's line or entry.
  int32_t lookup(const std::string& token, const std::string& where) const {
    auto it = ids.find(token);
    MOON_CHECK(it != ids.end(), where, ": the merge names ", show_token(token), ", which is not in the vocabulary");
    return it->second;
  }
};

// A JSON object {"spelling": id} over all tokens in id order (written by hand: nlohmann's ordered_json
// inserts in linear time, quadratic over a 150k vocabulary).
std::string vocab_json_text(const std::vector<std::string>& tokens) {
  std::string out = "{";
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (id) out += ", ";
    out += json(bytes_to_unicode(tokens[id])).dump();
    out += ": " + std::to_string(id);
  }
  return out + "}";
}

// The pre-tokenizer a tokenizer.json's "pre_tokenizer" describes (GPT-2 when none).
PreTokenizer detect_style(const json& pre, const std::string& name) {
  std::vector<std::string> regexes;
  bool byte_level_split = false;
  // walk the (possibly nested "Sequence") pre-tokenizer description
  std::function<void(const json&)> walk = [&](const json& node) {
    if (node.is_array()) {
      for (const json& child : node) walk(child);
    } else if (node.is_object()) {
      if (node.contains("type") && node["type"] == "ByteLevel" && node.value("use_regex", true) == true)
        byte_level_split = true;
      if (node.contains("pattern") && node["pattern"].is_object() && node["pattern"].contains("Regex") &&
          node["pattern"]["Regex"].is_string())
        regexes.push_back(node["pattern"]["Regex"].get<std::string>());
      for (const auto& [key, child] : node.items())
        if (key != "pattern") walk(child);
    }
  };
  walk(pre);
  for (const std::string& r : regexes) {
    if (r == pretokenizer_regex(PreTokenizer::Qwen2)) return PreTokenizer::Qwen2;
    if (r == pretokenizer_regex(PreTokenizer::Gpt2)) return PreTokenizer::Gpt2;
    fail(name, ": pre_tokenizer: unsupported split pattern ", show_token(r),
         " (moon implements the GPT-2 and Qwen2 patterns; see docs/tokenizer.md)");
  }
  (void)byte_level_split;  // a ByteLevel pre-tokenizer with its regex is GPT-2's, as is none at all
  return PreTokenizer::Gpt2;
}

}  // namespace

std::string bytes_to_unicode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(kByteMap.to_cp[static_cast<uint8_t>(c)], out);
  return out;
}

bool unicode_to_bytes(std::string_view s, std::string& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    const Utf8Char c = decode_utf8(s.data() + i, s.size() - i);
    if (!c.valid || c.cp >= 512 || kByteMap.from_cp[c.cp] < 0) return false;
    out += static_cast<char>(kByteMap.from_cp[c.cp]);
    i += c.len;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Construction

BpeTokenizer BpeTokenizer::from_vocab(std::vector<std::string> tokens, const std::vector<std::pair<int32_t, int32_t>>& merges,
                                      const std::vector<int32_t>& added, PreTokenizer style, const std::string& origin) {
  BpeTokenizer t;
  t.tokens_ = std::move(tokens);
  t.merges_ = merges;
  t.added_ = added;
  t.style_ = style;
  t.finish(origin, [](size_t rank) { return "merge #" + std::to_string(rank); });
  return t;
}

void BpeTokenizer::finish(const std::string& origin, const std::function<std::string(size_t)>& merge_where) {
  MOON_CHECK(!tokens_.empty(), origin, ": the vocabulary is empty");
  const int64_t n = static_cast<int64_t>(tokens_.size());
  by_bytes_.clear();
  by_bytes_.reserve(tokens_.size() + std::size(kSpecialTokens));
  for (int32_t id = 0; id < n; ++id) {
    MOON_CHECK(!tokens_[id].empty(), origin, ": token id ", id, " is empty");
    auto [it, inserted] = by_bytes_.emplace(tokens_[id], id);
    MOON_CHECK(inserted, origin, ": tokens ", it->second, " and ", id, " are the same bytes ", show_token(tokens_[id]));
  }
  for (int b = 0; b < 256; ++b) {
    auto it = by_bytes_.find(std::string(1, static_cast<char>(b)));
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", b);
    MOON_CHECK(it != by_bytes_.end(), origin, ": no token for the byte ", hex,
               " (a byte-level vocabulary needs all 256 single bytes)");
    byte_ids_[b] = it->second;
  }
  // merge table: open addressing at load factor <= 1/2
  size_t cap = 16;
  while (cap < merges_.size() * 2) cap *= 2;
  merge_table_.assign(cap, MergeSlot{kEmpty, 0, 0});
  std::string joined;
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    const auto [left, right] = merges_[rank];
    MOON_CHECK(left >= 0 && left < n && right >= 0 && right < n, origin, ": ", merge_where(rank), ": token id out of range");
    joined = tokens_[left] + tokens_[right];
    auto it = by_bytes_.find(joined);
    MOON_CHECK(it != by_bytes_.end(), origin, ": ", merge_where(rank), ": the merged token ", show_token(bytes_to_unicode(joined)),
               " is not in the vocabulary");
    const uint64_t key = pair_key(left, right);
    size_t slot = hash_key(key, cap - 1);
    while (merge_table_[slot].key != kEmpty && merge_table_[slot].key != key) slot = (slot + 1) & (cap - 1);
    if (merge_table_[slot].key == key) continue;  // a repeated merge keeps its first (lowest) rank
    merge_table_[slot] = {key, static_cast<int32_t>(rank), it->second};
  }
  // added tokens, then the special tokens that are missing
  for (int32_t id : added_)
    MOON_CHECK(id >= 0 && id < n, origin, ": added token id ", id, " is outside the vocabulary (", n, " tokens)");
  for (const char* special : kSpecialTokens) {
    auto it = by_bytes_.find(special);
    int32_t id;
    if (it == by_bytes_.end()) {
      id = static_cast<int32_t>(tokens_.size());
      tokens_.emplace_back(special);
      by_bytes_.emplace(special, id);
    } else {
      id = it->second;
    }
    if (std::find(added_.begin(), added_.end(), id) == added_.end()) added_.push_back(id);
  }
  std::fill(std::begin(added_first_byte_), std::end(added_first_byte_), false);
  for (int32_t id : added_) {
    MOON_CHECK(is_valid_utf8(tokens_[id].data(), tokens_[id].size()), origin, ": added token ", id, " is not valid UTF-8");
    added_first_byte_[static_cast<uint8_t>(tokens_[id][0])] = true;
  }
  added_by_length_ = added_;
  std::stable_sort(added_by_length_.begin(), added_by_length_.end(),
                   [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
  serial_ = g_next_serial.fetch_add(1);
}

// ---------------------------------------------------------------------------------------------------------
// Encoding and decoding

bool BpeTokenizer::find_merge(int32_t left, int32_t right, int32_t& rank, int32_t& result) const {
  const uint64_t key = pair_key(left, right);
  const size_t mask = merge_table_.size() - 1;
  for (size_t slot = hash_key(key, mask);; slot = (slot + 1) & mask) {
    const MergeSlot& s = merge_table_[slot];
    if (s.key == key) {
      rank = s.rank;
      result = s.result;
      return true;
    }
    if (s.key == kEmpty) return false;
  }
}

void BpeTokenizer::merge_word(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  int32_t rank = 0, result = 0;
  if (n <= 64) {
    // short word: ranks[i] is the rank of the pair (ids[i], ids[i+1]); merge the lowest, leftmost first
    int32_t ranks[64];
    int32_t results[64];
    size_t len = n;
    for (size_t i = 0; i + 1 < len; ++i) {
      ranks[i] = find_merge(ids[i], ids[i + 1], rank, result) ? rank : INT32_MAX;
      results[i] = result;
    }
    while (len > 1) {
      size_t best = 0;
      for (size_t i = 1; i + 1 < len; ++i)
        if (ranks[i] < ranks[best]) best = i;
      if (ranks[best] == INT32_MAX) break;
      ids[best] = results[best];
      for (size_t i = best + 1; i + 1 < len; ++i) {  // drop ids[best + 1]
        ids[i] = ids[i + 1];
        ranks[i] = ranks[i + 1];
        results[i] = results[i + 1];
      }
      --len;
      if (best + 1 < len) ranks[best] = find_merge(ids[best], ids[best + 1], rank, results[best]) ? rank : INT32_MAX;
      if (best > 0) ranks[best - 1] = find_merge(ids[best - 1], ids[best], rank, results[best - 1]) ? rank : INT32_MAX;
    }
    ids.resize(len);
    return;
  }
  // long word: a doubly linked list of symbols and a min-heap of candidate pairs (rank, position), so that
  // the cost is O(n log n); stale heap entries are recognised by their token ids and skipped.
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> sym(n);  // (n) one per byte at first; merged-away symbols have id -1
  for (size_t i = 0; i < n; ++i) sym[i] = {ids[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || sym[pos].next < 0) return;
    const int32_t left = sym[pos].id, right = sym[sym[pos].next].id;
    if (find_merge(left, right, rank, result)) heap.push({rank, pos, left, right});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& s = sym[c.pos];
    if (s.id != c.left || s.next < 0 || sym[s.next].id != c.right) continue;  // stale
    find_merge(c.left, c.right, rank, result);
    const int32_t gone = s.next;
    s.id = result;
    s.next = sym[gone].next;
    if (s.next >= 0) sym[s.next].prev = c.pos;
    sym[gone].id = -1;
    push(s.prev);
    push(c.pos);
  }
  size_t len = 0;
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids[len++] = sym[i].id;
  ids.resize(len);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(word[0])]);
    return;
  }
  CacheSlot* slot = nullptr;
  if (word.size() <= kCacheMaxWord) {
    slot = &cache_slot(word);
    if (slot->owner == serial_ && slot->word == word) {
      out.insert(out.end(), slot->ids.begin(), slot->ids.end());
      return;
    }
  }
  std::vector<int32_t> ids(word.size());  // (word bytes) one token per byte, merged in place
  for (size_t i = 0; i < word.size(); ++i) ids[i] = byte_ids_[static_cast<uint8_t>(word[i])];
  merge_word(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (slot) {
    slot->owner = serial_;
    slot->word.assign(word);
    slot->ids = std::move(ids);
  }
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out) const {
  for (size_t pos = 0; pos < text.size();) {
    const size_t end = next_pretoken_end(text, pos, style_);
    encode_word(text.substr(pos, end - pos), out);
    pos = end;
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t i = 0; i < text.size();) {
    int32_t match = -1;
    if (added_first_byte_[static_cast<uint8_t>(text[i])]) {
      for (int32_t id : added_by_length_) {
        const std::string& tok = tokens_[id];
        if (text.compare(i, tok.size(), tok) == 0) {
          match = id;
          break;
        }
      }
    }
    if (match < 0) {
      ++i;
      continue;
    }
    encode_ordinary(text.substr(segment, i - segment), out);
    out.push_back(match);
    i += tokens_[match].size();
    segment = i;
  }
  encode_ordinary(text.substr(segment), out);
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += token_bytes(id);
  return text;
}

const std::string& BpeTokenizer::token_bytes(int32_t id) const {
  MOON_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id ", id, " is outside the vocabulary (0 .. ",
             vocab_size() - 1, ")");
  return tokens_[id];
}

int32_t BpeTokenizer::token_id(std::string_view bytes) const {
  auto it = by_bytes_.find(std::string(bytes));
  return it == by_bytes_.end() ? -1 : it->second;
}

int32_t BpeTokenizer::special_id(std::string_view text) const {
  const int32_t id = token_id(text);
  MOON_CHECK(id >= 0, "tokenizer: no token ", show_token(text), " in the vocabulary");
  return id;
}

// ---------------------------------------------------------------------------------------------------------
// Files

BpeTokenizer BpeTokenizer::from_strings(std::string_view vocab_json, std::string_view merges_txt, const std::string& vocab_name,
                                        const std::string& merges_name, PreTokenizer style) {
  const json vocab = parse_json(vocab_json, vocab_name);
  MOON_CHECK(vocab.is_object(), vocab_name, ": expected a JSON object {\"token\": id, ...}, got a ", vocab.type_name());
  VocabBuilder builder{vocab_name, {}, {}, {}};
  for (const auto& [token, value] : vocab.items()) builder.add(token, value, "entry " + show_token(token));
  std::vector<std::string> tokens = builder.finish();

  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<size_t> merge_lines;  // (merges) 1-based line of each merge
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_txt.size();) {
    size_t end = merges_txt.find('\n', pos);
    if (end == std::string_view::npos) end = merges_txt.size();
    std::string_view line = merges_txt.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const std::string where = merges_name + ":" + std::to_string(line_no);
    const size_t space = line.find(' ');
    MOON_CHECK(space != std::string_view::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string_view::npos,
               where, ": expected two tokens separated by one space (\"left right\"), got ", show_token(line));
    merges.emplace_back(builder.lookup(std::string(line.substr(0, space)), where),
                        builder.lookup(std::string(line.substr(space + 1)), where));
    merge_lines.push_back(line_no);
  }
  BpeTokenizer t;
  t.tokens_ = std::move(tokens);
  t.merges_ = std::move(merges);
  t.style_ = style;
  t.finish(vocab_name, [&](size_t rank) { return merges_name + ":" + std::to_string(merge_lines[rank]); });
  return t;
}

BpeTokenizer BpeTokenizer::from_files(const std::string& vocab_json, const std::string& merges_txt, PreTokenizer style) {
  const std::string vocab = read_file_text(vocab_json);
  const std::string merges = read_file_text(merges_txt);
  return from_strings(vocab, merges, vocab_json, merges_txt, style);
}

BpeTokenizer BpeTokenizer::from_tokenizer_json_string(std::string_view text, const std::string& name) {
  const json root = parse_json(text, name);
  MOON_CHECK(root.is_object(), name, ": expected a JSON object at the top, got a ", root.type_name());
  MOON_CHECK(root.contains("model") && root["model"].is_object(), name, ": no \"model\" object (is this a tokenizer.json?)");
  const json& model = root["model"];
  if (model.contains("type") && !model["type"].is_null())
    MOON_CHECK(model["type"] == "BPE", name, ": model.type is ", model["type"].dump(), "; moon reads BPE tokenizers only");
  MOON_CHECK(model.contains("vocab") && model["vocab"].is_object(), name, ": model.vocab must be an object {\"token\": id}");
  VocabBuilder builder{name, {}, {}, {}};
  for (const auto& [token, value] : model["vocab"].items()) builder.add(token, value, "model.vocab " + show_token(token));
  // added tokens: spelled as their own text, not through the byte map
  std::vector<std::pair<int64_t, std::string>> added_entries;
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& added = root["added_tokens"];
    MOON_CHECK(added.is_array(), name, ": added_tokens must be an array");
    for (size_t i = 0; i < added.size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json& a = added[i];
      MOON_CHECK(a.is_object() && a.contains("content") && a["content"].is_string() && a.contains("id"), name, ": ", where,
                 ": expected {\"id\": N, \"content\": \"...\"}");
      const std::string content = a["content"].get<std::string>();
      MOON_CHECK(!content.empty(), name, ": ", where, ": empty content");
      // an added token may repeat a model.vocab entry with the same id (spelled through the byte map there)
      const json& id = a["id"];
      const std::string* existing = id.is_number_integer() ? builder.find(id.get<int64_t>()) : nullptr;
      const bool in_vocab = existing != nullptr && spelled_bytes(*existing) == content;
      if (!in_vocab) builder.add(content, id, where);
      added_entries.emplace_back(id.get<int64_t>(), content);
    }
  }
  std::vector<std::string> tokens = builder.finish();
  std::vector<int32_t> added_ids;
  for (const auto& [id, content] : added_entries) {
    tokens[id] = content;  // the text itself, not byte-map spelled
    added_ids.push_back(static_cast<int32_t>(id));
  }
  MOON_CHECK(model.contains("merges") && model["merges"].is_array(), name, ": model.merges must be an array");
  std::vector<std::pair<int32_t, int32_t>> merges;
  const json& merge_list = model["merges"];
  for (size_t i = 0; i < merge_list.size(); ++i) {
    const std::string where = name + ": model.merges[" + std::to_string(i) + "]";
    const json& m = merge_list[i];
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      MOON_CHECK(space != std::string::npos && space > 0 && space + 1 < s.size() && s.find(' ', space + 1) == std::string::npos,
                 where, ": expected \"left right\", got ", show_token(s));
      left = s.substr(0, space), right = s.substr(space + 1);
    } else {
      MOON_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), where,
                 ": expected \"left right\" or [\"left\", \"right\"], got ", m.dump().substr(0, 60));
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    }
    merges.emplace_back(builder.lookup(left, where), builder.lookup(right, where));
  }
  BpeTokenizer t;
  t.tokens_ = std::move(tokens);
  t.merges_ = std::move(merges);
  t.added_ = std::move(added_ids);
  t.style_ = root.contains("pre_tokenizer") ? detect_style(root["pre_tokenizer"], name) : PreTokenizer::Gpt2;
  t.finish(name, [](size_t rank) { return "model.merges[" + std::to_string(rank) + "]"; });
  return t;
}

BpeTokenizer BpeTokenizer::from_tokenizer_json(const std::string& path) {
  return from_tokenizer_json_string(read_file_text(path), path);
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / "tokenizer.json", ec)) return from_tokenizer_json((dir / "tokenizer.json").string());
    if (fs::exists(dir / "vocab.json", ec) && fs::exists(dir / "merges.txt", ec))
      return from_files((dir / "vocab.json").string(), (dir / "merges.txt").string());
    if (fs::exists(dir / "encoder.json", ec) && fs::exists(dir / "vocab.bpe", ec))
      return from_files((dir / "encoder.json").string(), (dir / "vocab.bpe").string());
    fail(path, ": no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in this folder (train one with ",
         "`moon tokenize --train CORPUS --vocab-size N --out DIR`, or fetch GPT-2's with scripts/fetch_gpt2_tokenizer.sh)");
  }
  MOON_CHECK(fs::exists(path, ec), path, ": no such tokenizer file or folder");
  return from_tokenizer_json(path);
}

void BpeTokenizer::save(const std::string& folder) const {
  make_dirs(folder);
  const std::string vocab = vocab_json_text(tokens_);
  std::string merges_txt = "#version: 0.2\n";
  std::string merge_list = "[";  // JSON array of "left right" strings
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    const auto [left, right] = merges_[rank];
    const std::string line = bytes_to_unicode(tokens_[left]) + " " + bytes_to_unicode(tokens_[right]);
    merges_txt += line + "\n";
    merge_list += (rank ? ",\n  " : "\n  ") + json(line).dump();
  }
  merge_list += "\n]";
  nlohmann::ordered_json added = nlohmann::ordered_json::array();
  for (int32_t id : added_)
    added.push_back(nlohmann::ordered_json{{"id", id}, {"content", tokens_[id]}, {"single_word", false}, {"lstrip", false},
                                           {"rstrip", false}, {"normalized", false}, {"special", true}});
  nlohmann::ordered_json pre;
  if (style_ == PreTokenizer::Gpt2) {
    pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  } else {
    pre = {{"type", "Sequence"},
           {"pretokenizers",
            {{{"type", "Split"}, {"pattern", {{"Regex", pretokenizer_regex(style_)}}}, {"behavior", "Isolated"}, {"invert", false}},
             {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  }
  // the big vocab and merges are spliced in as text where the placeholders are
  nlohmann::ordered_json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer", pre},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", "@VOCAB@"},
        {"merges", "@MERGES@"}}}};
  std::string tokenizer_json = root.dump(1);
  tokenizer_json.replace(tokenizer_json.find("\"@VOCAB@\""), 9, vocab);
  tokenizer_json.replace(tokenizer_json.find("\"@MERGES@\""), 10, merge_list);
  const std::string dir = folder.empty() || folder.back() == '/' ? folder : folder + "/";
  write_file_atomic(dir + "vocab.json", vocab);
  write_file_atomic(dir + "merges.txt", merges_txt);
  write_file_atomic(dir + "tokenizer.json", tokenizer_json + "\n");
}

}  // namespace moon::io
