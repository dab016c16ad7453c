// BPE training with incremental pair counts: a lazy max-heap of (count, pair), and for every pair the list
// of pieces ("words") it occurs in, so that each merge touches only the words that contain it.
#include "io/bpe_trainer.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "runtime/error.h"

namespace moon::io {

namespace {

struct Word {
  std::vector<int32_t> ids;  // current tokens of the piece
  int64_t freq;              // how often the piece occurs in the corpus
};

inline uint64_t key_of(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// Heap order: the highest count first; among equal counts the smallest (left, right).
struct Entry {
  int64_t count;
  uint64_t key;
  bool operator<(const Entry& o) const { return count != o.count ? count < o.count : key > o.key; }
};

// Counts the pre-tokenised pieces of all texts (special tokens cut out first, as encode does).
std::unordered_map<std::string_view, int64_t> count_pieces(const std::vector<std::string>& texts, PreTokenizer style) {
  std::unordered_map<std::string_view, int64_t> counts;
  auto add_span = [&](std::string_view span) {
    for (size_t pos = 0; pos < span.size();) {
      const size_t end = next_pretoken_end(span, pos, style);
      ++counts[span.substr(pos, end - pos)];
      pos = end;
    }
  };
  for (const std::string& text : texts) {
    const std::string_view t(text);
    size_t segment = 0;
    for (size_t i = 0; i < t.size();) {
      size_t matched = 0;
      if (t[i] == '<')
        for (const char* special : kSpecialTokens)
          if (t.compare(i, std::strlen(special), special) == 0) matched = std::max(matched, std::strlen(special));
      if (!matched) {
        ++i;
        continue;
      }
      add_span(t.substr(segment, i - segment));
      i += matched;
      segment = i;
    }
    add_span(t.substr(segment));
  }
  return counts;
}

}  // namespace

BpeTokenizer train_bpe(const std::vector<std::string>& texts, int vocab_size, PreTokenizer style) {
  const int n_special = static_cast<int>(std::size(kSpecialTokens));
  MOON_CHECK(vocab_size >= 256 + n_special, "train_bpe: vocab_size ", vocab_size, " is too small: it must be at least ",
             256 + n_special, " (256 bytes + ", n_special, " special tokens)");
  // the distinct pieces, sorted by their bytes so that word indices do not depend on hashing
  const auto counts = count_pieces(texts, style);
  std::vector<std::pair<std::string_view, int64_t>> pieces(counts.begin(), counts.end());
  std::sort(pieces.begin(), pieces.end());
  std::vector<Word> words(pieces.size());
  for (size_t w = 0; w < pieces.size(); ++w) {
    words[w].freq = pieces[w].second;
    for (char c : pieces[w].first) words[w].ids.push_back(static_cast<uint8_t>(c));
  }

  std::vector<std::string> tokens(256);  // id -> bytes
  for (int b = 0; b < 256; ++b) tokens[b] = std::string(1, static_cast<char>(b));
  std::unordered_map<std::string, int32_t> token_ids;
  for (int b = 0; b < 256; ++b) token_ids.emplace(tokens[b], b);

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // pair -> words it occurs in (may repeat)
  for (size_t w = 0; w < words.size(); ++w) {
    const auto& ids = words[w].ids;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      const uint64_t k = key_of(ids[i], ids[i + 1]);
      pair_count[k] += words[w].freq;
      pair_words[k].push_back(static_cast<int32_t>(w));
    }
  }
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  std::vector<std::pair<int32_t, int32_t>> merges;
  std::vector<int32_t> visited(words.size(), -1);  // the merge that last processed each word
  std::vector<uint64_t> touched;
  std::vector<int32_t> merged;
  const size_t target = static_cast<size_t>(vocab_size - n_special);
  while (tokens.size() < target && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto found = pair_count.find(top.key);
    if (found == pair_count.end() || found->second <= 0) continue;
    if (found->second != top.count) {  // stale: its count dropped since it was pushed
      heap.push({found->second, top.key});
      continue;
    }
    const auto left = static_cast<int32_t>(top.key >> 32), right = static_cast<int32_t>(top.key & 0xFFFFFFFFu);
    std::string bytes = tokens[left] + tokens[right];
    auto [it, is_new] = token_ids.emplace(bytes, static_cast<int32_t>(tokens.size()));
    if (is_new) tokens.push_back(std::move(bytes));
    const int32_t id = it->second;
    const auto merge_index = static_cast<int32_t>(merges.size());
    merges.emplace_back(left, right);

    touched.clear();
    std::vector<int32_t> where = std::move(pair_words[top.key]);
    pair_words.erase(top.key);
    for (int32_t w : where) {
      if (visited[w] == merge_index) continue;
      visited[w] = merge_index;
      Word& word = words[w];
      auto& ids = word.ids;
      // merge left to right, non-overlapping; the counts of the old pairs go, those of the new ones come
      merged.clear();
      bool any = false;
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i + 1 < ids.size() && ids[i] == left && ids[i + 1] == right) {
          merged.push_back(id);
          ++i;
          any = true;
        } else {
          merged.push_back(ids[i]);
        }
      }
      if (!any) continue;  // the pair was merged away by an earlier merge
      for (size_t i = 0; i + 1 < ids.size(); ++i) pair_count[key_of(ids[i], ids[i + 1])] -= word.freq;
      ids.swap(merged);
      for (size_t i = 0; i + 1 < ids.size(); ++i) {
        const uint64_t k = key_of(ids[i], ids[i + 1]);
        pair_count[k] += word.freq;
        if (ids[i] == id || ids[i + 1] == id) {
          pair_words[k].push_back(w);
          touched.push_back(k);
        }
      }
    }
    pair_count.erase(top.key);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) heap.push({pair_count[k], k});
  }
  return BpeTokenizer::from_vocab(std::move(tokens), merges, {}, style, "train_bpe");
}

}  // namespace moon::io
