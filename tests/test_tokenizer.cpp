// Byte-level BPE tokenizer tests. Suite `tokenizer`: Unicode classes, UTF-8, both pre-tokenisers, a
// hand-written vocabulary with ids worked out by hand, special tokens, training, the file formats and
// their errors. Suite `fuzz_tokenizer`: seeded random and mutated inputs through encode (round trip) and
// seeded corruptions of the three file formats through the loaders (load or moon::Error, never a crash).
#include <doctest/doctest.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/bpe_tokenizer.h"
#include "io/bpe_trainer.h"
#include "io/file_util.h"
#include "io/pretokenize.h"
#include "io/unicode_class.h"
#include "tests/test_util.h"

using namespace moon;
using namespace moon::io;
using moon::test::contains;
using moon::test::error_of;

namespace {

std::vector<std::string> pieces(std::string_view text, PreTokenizer style) {
  std::vector<std::string> out;
  for (std::string_view p : pretokenize(text, style)) out.emplace_back(p);
  return out;
}

// tests/data/tokenizer_sample.txt, found next to this source file (CMake compiles it by absolute path)
std::string sample_path() {
  return (std::filesystem::path(__FILE__).parent_path() / "data" / "tokenizer_sample.txt").string();
}

// The tiny hand-written vocabulary: ids 0..255 are the bytes themselves, then
//   256 "he" = h+e, 257 "ll" = l+l, 258 "hell" = he+ll, 259 "hello" = hell+o, 260 " w" = ' '+w,
//   261 "or" = o+r, 262 " wor" = " w"+or   (merge ranks in this order)
std::string tiny_vocab_json() {
  std::string json = "{";
  for (int b = 0; b < 256; ++b) {
    std::string spelled = bytes_to_unicode(std::string(1, static_cast<char>(b)));
    if (spelled == "\"" || spelled == "\\") spelled = "\\" + spelled;
    json += "\"" + spelled + "\": " + std::to_string(b) + ", ";
  }
  json += "\"he\": 256, \"ll\": 257, \"hell\": 258, \"hello\": 259, \"\xC4\xA0w\": 260, \"or\": 261, \"\xC4\xA0wor\": 262}";
  return json;
}
const char* kTinyMerges = "#version: 0.2\nh e\nl l\nhe ll\nhell o\n\xC4\xA0 w\no r\n\xC4\xA0w or\n";

BpeTokenizer tiny() { return BpeTokenizer::from_strings(tiny_vocab_json(), kTinyMerges, "vocab.json", "merges.txt"); }

// tokenizer.json text for the tiny vocabulary, merges as "a b" strings or as pairs.
std::string tiny_tokenizer_json(bool merges_as_pairs, const std::string& pre_tokenizer) {
  std::string merges;
  std::string m = kTinyMerges;
  size_t pos = m.find('\n') + 1;
  while (pos < m.size()) {
    const size_t end = m.find('\n', pos);
    const std::string line = m.substr(pos, end - pos);
    const size_t sp = line.find(' ');
    if (!merges.empty()) merges += ", ";
    merges += merges_as_pairs ? "[\"" + line.substr(0, sp) + "\", \"" + line.substr(sp + 1) + "\"]" : "\"" + line + "\"";
    pos = end + 1;
  }
  return "{\"version\": \"1.0\", \"added_tokens\": [{\"id\": 263, \"content\": \"<|user|>\", \"special\": true}], "
         "\"pre_tokenizer\": " + pre_tokenizer + ", \"model\": {\"type\": \"BPE\", \"vocab\": " + tiny_vocab_json() +
         ", \"merges\": [" + merges + "]}}";
}

// GPT-2's own merge loop (what gpt-3-encoder does): merge every occurrence of the lowest-ranked pair, left
// to right, until no pair has a rank. A slow reference for our fast loops.
std::vector<int32_t> naive_bpe(const BpeTokenizer& tok, std::string_view word) {
  std::vector<std::string> parts;
  for (char c : word) parts.emplace_back(1, c);
  const auto& merges = tok.merges();
  while (parts.size() > 1) {
    size_t best = SIZE_MAX;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      const int32_t l = tok.token_id(parts[i]), r = tok.token_id(parts[i + 1]);
      for (size_t rank = 0; rank < std::min(best, merges.size()); ++rank)
        if (merges[rank].first == l && merges[rank].second == r) best = rank;
    }
    if (best == SIZE_MAX) break;
    const std::string& a = tok.token_bytes(merges[best].first);
    const std::string& b = tok.token_bytes(merges[best].second);
    std::vector<std::string> next;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i + 1 < parts.size() && parts[i] == a && parts[i + 1] == b) {
        next.push_back(a + b);
        ++i;
      } else {
        next.push_back(parts[i]);
      }
    }
    parts.swap(next);
  }
  std::vector<int32_t> ids;
  for (const auto& p : parts) ids.push_back(tok.token_id(p));
  return ids;
}

// A tokenizer trained once on the sample text (shared by several cases).
const BpeTokenizer& trained(PreTokenizer style) {
  static const BpeTokenizer gpt2 = train_bpe({read_file_text(sample_path())}, 700, PreTokenizer::Gpt2);
  static const BpeTokenizer qwen2 = train_bpe({read_file_text(sample_path())}, 700, PreTokenizer::Qwen2);
  return style == PreTokenizer::Gpt2 ? gpt2 : qwen2;
}

std::string temp_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("moon_tok_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace

TEST_SUITE("tokenizer") {
  TEST_CASE("unicode classes follow JavaScript's \\p{L}, \\p{N} and \\s") {
    CHECK(is_letter('a'));
    CHECK(is_letter(0x4E2D));   // 中
    CHECK(is_letter(0x00E9));   // é
    CHECK(!is_letter(0x0301));  // combining acute: a mark, not a letter
    CHECK(is_number('7'));
    CHECK(is_number(0x0663));  // Arabic-Indic three
    CHECK(is_number(0x00BD));  // ½
    CHECK(is_number(0x2162));  // Roman numeral three
    CHECK(is_space(' '));
    CHECK(is_space('\t'));
    CHECK(is_space('\v'));
    CHECK(is_space(0x00A0));
    CHECK(is_space(0x3000));
    CHECK(is_space(0xFEFF));
    CHECK(!is_space(0x0085));  // NEL is not \s in JavaScript
    CHECK(!is_space(0x200B));  // zero-width space neither
    CHECK(unicode_class('!') == kClassNone);
    CHECK(unicode_class(0x1F600) == kClassNone);  // emoji
    CHECK(unicode_class(0x110000) == kClassNone);
  }

  TEST_CASE("UTF-8 decoding never reads past the end and flags invalid bytes") {
    auto dec = [](std::string s, size_t n) { return decode_utf8(s.data(), n); };
    CHECK(dec("\xE4\xB8\xAD", 3).cp == 0x4E2D);
    CHECK(dec("\xE4\xB8\xAD", 3).len == 3);
    CHECK(dec("\xF0\x9F\x98\x80", 4).cp == 0x1F600);
    for (const char* bad : {"\x80", "\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xFF", "\xC3("}) {
      const Utf8Char c = dec(bad, std::strlen(bad));
      CHECK(!c.valid);
      CHECK(c.len == 1);
      CHECK(c.cp == 0xFFFD);
    }
    CHECK(!dec("\xE4\xB8\xAD", 2).valid);  // truncated by the length, not the terminator
    std::string out;
    append_utf8(0x1F600, out);
    append_utf8(0xD800, out);  // a surrogate becomes U+FFFD
    CHECK(out == "\xF0\x9F\x98\x80\xEF\xBF\xBD");
    CHECK(is_valid_utf8(out.data(), out.size()));
  }

  TEST_CASE("GPT-2 pre-tokenisation") {
    using V = std::vector<std::string>;
    const auto g = PreTokenizer::Gpt2;
    CHECK(pieces("Hello world", g) == V{"Hello", " world"});
    CHECK(pieces("a  b", g) == V{"a", " ", " b"});
    CHECK(pieces("a   b", g) == V{"a", "  ", " b"});
    CHECK(pieces("a\n\nb", g) == V{"a", "\n", "\n", "b"});
    CHECK(pieces("trailing   ", g) == V{"trailing", "   "});
    CHECK(pieces("don't I'LL", g) == V{"don", "'t", " I", "'", "LL"});
    CHECK(pieces("x's'S", g) == V{"x", "'s", "'", "S"});
    CHECK(pieces("they're we've I'm you'll he'd", g) ==
          V{"they", "'re", " we", "'ve", " I", "'m", " you", "'ll", " he", "'d"});
    CHECK(pieces(" 123abc", g) == V{" 123", "abc"});
    CHECK(pieces("  !!", g) == V{" ", " !!"});
    CHECK(pieces("\t hi", g) == V{"\t", " hi"});
    CHECK(pieces("3.14", g) == V{"3", ".", "14"});
    CHECK(pieces("中文 text", g) == V{"中文", " text"});
    CHECK(pieces("hi\xC2\xA0there", g) == V{"hi", "\xC2\xA0", "there"});  // NBSP is \s but not " ?"
    CHECK(pieces("a \n b", g) == V{"a", " \n", " b"});
    CHECK(pieces("\xFF\xFEok", g) == V{"\xFF\xFE", "ok"});  // invalid bytes count as symbols
    CHECK(pieces("", g).empty());
  }

  TEST_CASE("Qwen2 pre-tokenisation") {
    using V = std::vector<std::string>;
    const auto q = PreTokenizer::Qwen2;
    CHECK(pieces("Hello world", q) == V{"Hello", " world"});
    CHECK(pieces("12345", q) == V{"1", "2", "3", "4", "5"});
    CHECK(pieces("don't I'LL", q) == V{"don", "'t", " I", "'LL"});
    CHECK(pieces("a\n\nb", q) == V{"a", "\n\n", "b"});
    CHECK(pieces("  \n  word", q) == V{"  \n", " ", " word"});
    CHECK(pieces("(word", q) == V{"(word"});
    CHECK(pieces("\tword", q) == V{"\tword"});
    CHECK(pieces("x!!\n\ny", q) == V{"x", "!!\n\n", "y"});
    CHECK(pieces("trailing   ", q) == V{"trailing", "   "});
    CHECK(pieces("a ,b", q) == V{"a", " ,", "b"});
    CHECK(pieces("1st", q) == V{"1", "st"});
    CHECK(pieces("a\r\nb", q) == V{"a", "\r\n", "b"});
    CHECK(pieces("end \n", q) == V{"end", " \n"});
  }

  TEST_CASE("the byte-to-unicode map") {
    CHECK(bytes_to_unicode(" ") == "\xC4\xA0");  // Ġ
    CHECK(bytes_to_unicode("\n") == "\xC4\x8A");  // Ċ
    CHECK(bytes_to_unicode("a!~") == "a!~");
    std::string all, back;
    for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
    REQUIRE(unicode_to_bytes(bytes_to_unicode(all), back));
    CHECK(back == all);
    CHECK(!unicode_to_bytes("\xE4\xB8\xAD", back));  // 中 is not in the map
  }

  TEST_CASE("hand-written vocabulary: ids worked out by hand") {
    const BpeTokenizer tok = tiny();
    CHECK(tok.merge_count() == 7);
    // "hello": h e l l o -> he l l o -> he ll o -> hell o -> hello
    // " world": ' ' w o r l d -> " w" o r l d -> " w" or l d -> " wor" l d
    CHECK(tok.encode("hello world") == std::vector<int32_t>{259, 262, 'l', 'd'});
    CHECK(tok.encode("hhe") == std::vector<int32_t>{'h', 256});
    CHECK(tok.encode("llll") == std::vector<int32_t>{257, 257});
    CHECK(tok.encode("lll") == std::vector<int32_t>{257, 'l'});  // leftmost first
    CHECK(tok.decode({259, 262, 'l', 'd'}) == "hello world");
    CHECK(tok.encode("").empty());
  }

  TEST_CASE("special tokens are matched first and exist in every tokenizer") {
    const BpeTokenizer tok = tiny();
    CHECK(tok.vocab_size() == 263 + 9);
    CHECK(tok.special_id("<|endoftext|>") == 263);
    CHECK(tok.special_id("<pad>") == 271);
    const int32_t start = tok.special_id("<|im_start|>"), emb = tok.special_id("<emb>");
    CHECK(tok.encode("<|im_start|>hello<emb>") == std::vector<int32_t>{start, 259, emb});
    CHECK(tok.encode("he<image></image>") == std::vector<int32_t>{256, tok.special_id("<image>"), tok.special_id("</image>")});
    CHECK(tok.encode("<think") == std::vector<int32_t>{'<', 't', 'h', 'i', 'n', 'k'});
    CHECK(tok.decode(tok.encode("a<think>b</think>c")) == "a<think>b</think>c");
    CHECK(contains(error_of([&] { tok.special_id("<nope>"); }), "no token \"<nope>\""));
    CHECK(contains(error_of([&] { tok.decode({272}); }), "token id 272 is outside the vocabulary (0 .. 271)"));
    CHECK(contains(error_of([&] { tok.decode({-1}); }), "token id -1 is outside"));
  }

  TEST_CASE("long words take the heap path and agree with GPT-2's merge loop") {
    const BpeTokenizer& tok = trained(PreTokenizer::Gpt2);
    std::mt19937 rng(7);
    const std::string alphabet = "etaoinshrdlu";
    for (int trial = 0; trial < 60; ++trial) {
      std::string word;
      const int len = trial < 30 ? 2 + trial : 65 + static_cast<int>(rng() % 300);
      for (int i = 0; i < len; ++i) word += alphabet[rng() % alphabet.size()];
      std::vector<int32_t> ours;
      tok.encode_ordinary(word, ours);
      CHECK(ours == naive_bpe(tok, word));
    }
  }

  TEST_CASE("training: first merges, tie-breaks, vocabulary size") {
    const BpeTokenizer t = train_bpe({"aaab aaab aaab ab"}, 256 + 9 + 10, PreTokenizer::Gpt2);
    // words: "aaab" x1, " aaab" x2, " ab" x1; (a,a) = 6 then (a,b) = 4, (aa,ab) = 3, (' ',aaab) = 2, (' ',ab) = 1
    using M = std::vector<std::pair<int32_t, int32_t>>;
    CHECK(t.merges() == M{{'a', 'a'}, {'a', 'b'}, {256, 257}, {' ', 258}, {' ', 257}});
    CHECK(t.vocab_size() == 261 + 9);  // ran out of pairs before 275
    CHECK(t.token_bytes(259) == " aaab");
    CHECK(t.encode("aaab aaab ab") == std::vector<int32_t>{258, 259, 260});
    // ties go to the smallest (left, right): " c" (32, 99) before "ab" (97, 98) before (" c", d)
    const BpeTokenizer tie = train_bpe({"ab cd"}, 256 + 9 + 3, PreTokenizer::Gpt2);
    CHECK(tie.merges() == M{{' ', 'c'}, {'a', 'b'}, {256, 'd'}});
    CHECK(contains(error_of([] { train_bpe({"x"}, 100, PreTokenizer::Gpt2); }), "vocab_size 100 is too small"));
  }

  TEST_CASE("training on the sample honours the vocabulary size, is deterministic and round-trips") {
    const std::string text = read_file_text(sample_path());
    for (PreTokenizer style : {PreTokenizer::Gpt2, PreTokenizer::Qwen2}) {
      const BpeTokenizer& a = trained(style);
      const BpeTokenizer b = train_bpe({text}, 700, style);
      CHECK(a.vocab_size() == 700);
      CHECK(a.merges() == b.merges());
      const auto ids = a.encode(text);
      CHECK(a.decode(ids) == text);
      CHECK(ids.size() * 3 < text.size() * 2);  // it compresses (the sample is mostly non-English)
      CHECK(a.special_id("<|endoftext|>") == 691);
    }
  }

  TEST_CASE("tokenizer.json: both merge spellings, added tokens, style detection") {
    const std::string gpt2_pre = R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})";
    for (bool pairs : {false, true}) {
      const BpeTokenizer t = BpeTokenizer::from_tokenizer_json_string(tiny_tokenizer_json(pairs, gpt2_pre), "tokenizer.json");
      CHECK(t.style() == PreTokenizer::Gpt2);
      CHECK(t.encode("hello world<|user|>") == std::vector<int32_t>{259, 262, 'l', 'd', 263});
      CHECK(t.special_id("<|endoftext|>") == 264);
      CHECK(t.vocab_size() == 273);
    }
    const std::string qwen_pre = std::string(R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": )") +
                                 nlohmann::json(pretokenizer_regex(PreTokenizer::Qwen2)).dump() +
                                 R"(}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]})";
    const BpeTokenizer q = BpeTokenizer::from_tokenizer_json_string(tiny_tokenizer_json(true, qwen_pre), "tokenizer.json");
    CHECK(q.style() == PreTokenizer::Qwen2);
    CHECK(q.encode("hello 42") == std::vector<int32_t>{259, ' ', '4', '2'});
    const std::string other = R"({"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}})";
    CHECK(contains(error_of([&] { BpeTokenizer::from_tokenizer_json_string(tiny_tokenizer_json(true, other), "t.json"); }),
                   "t.json: pre_tokenizer: unsupported split pattern \"\\p{N}{1,3}\""));
  }

  TEST_CASE("save then load gives the same tokenizer, in every format") {
    const std::string text = read_file_text(sample_path());
    for (PreTokenizer style : {PreTokenizer::Gpt2, PreTokenizer::Qwen2}) {
      const BpeTokenizer& t = trained(style);
      const std::string dir = temp_dir(pretokenizer_name(style));
      t.save(dir);
      const BpeTokenizer a = BpeTokenizer::load(dir);  // tokenizer.json
      const BpeTokenizer b = BpeTokenizer::from_files(dir + "/vocab.json", dir + "/merges.txt", style);
      for (const BpeTokenizer* u : {&a, &b}) {
        CHECK(u->style() == style);
        CHECK(u->vocab_size() == t.vocab_size());
        CHECK(u->merges() == t.merges());
        CHECK(u->encode(text) == t.encode(text));
        CHECK(u->special_id("<emb>") == t.special_id("<emb>"));
      }
      std::filesystem::remove_all(dir);
    }
  }

  TEST_CASE("bad files give errors naming the file and the entry") {
    const std::string v = tiny_vocab_json();
    auto load = [](const std::string& vocab, const std::string& merges) {
      return error_of([&] { BpeTokenizer::from_strings(vocab, merges, "vocab.json", "merges.txt"); });
    };
    CHECK(contains(load("{\"a\": 0,", kTinyMerges), "vocab.json: malformed JSON"));
    CHECK(contains(load("[1, 2]", kTinyMerges), "vocab.json: expected a JSON object"));
    CHECK(load("{}", "") == "vocab.json: the vocabulary is empty");
    CHECK(contains(load("{\"a\": 0, \"b\": 0}", ""), "vocab.json: entry \"b\": id 0 is used by both \"a\" and \"b\""));
    CHECK(contains(load("{\"a\": \"x\"}", ""), "vocab.json: entry \"a\": the id of \"a\" must be an integer"));
    CHECK(contains(load("{\"a\": 0, \"b\": 2}", ""), "vocab.json: no token has id 1"));
    CHECK(contains(load("{\"a\": 0}", ""), "vocab.json: no token for the byte 0x00"));
    CHECK(load(v, "#version: 0.2\nh e\nh zz\n") ==
          "merges.txt:3: the merge names \"zz\", which is not in the vocabulary");
    CHECK(contains(load(v, "#version: 0.2\nh e\nl l\nhe\n"), "merges.txt:4: expected two tokens separated by one space"));
    CHECK(contains(load(v, "h e\na b c\n"), "merges.txt:2: expected two tokens"));
    CHECK(load(v, "h e\nx y\n") == "vocab.json: merges.txt:2: the merged token \"xy\" is not in the vocabulary");
    auto load_json = [](const std::string& text) {
      return error_of([&] { BpeTokenizer::from_tokenizer_json_string(text, "tok.json"); });
    };
    CHECK(contains(load_json("{\"model\": 3}"), "tok.json: no \"model\" object"));
    CHECK(contains(load_json("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}"), "tok.json: model.type is \"WordPiece\""));
    CHECK(contains(load_json("{\"model\": {\"vocab\": " + v + ", \"merges\": [\"h e\", [\"l\"]]}}"),
                   "tok.json: model.merges[1]: expected \"left right\" or [\"left\", \"right\"]"));
    CHECK(contains(load_json("{\"model\": {\"vocab\": " + v + ", \"merges\": [\"h q\", \"q\"]}}"), "tok.json: model.merges[1]"));
    CHECK(contains(load_json("{\"added_tokens\": [{\"id\": 5, \"content\": \"zz\"}], \"model\": {\"vocab\": " + v +
                             ", \"merges\": []}}"),
                   "tok.json: added_tokens[0]: id 5 is used by both"));
    const std::string dir = temp_dir("bad");
    CHECK(contains(error_of([&] { BpeTokenizer::load(dir); }), "no tokenizer.json, vocab.json + merges.txt"));
    CHECK(contains(error_of([&] { BpeTokenizer::load(dir + "/missing.json"); }), "missing.json: no such tokenizer"));
    CHECK(contains(error_of([&] { BpeTokenizer::from_files(dir + "/vocab.json", dir + "/merges.txt"); }), dir + "/vocab.json"));
    std::filesystem::remove_all(dir);
  }
}

TEST_SUITE("fuzz_tokenizer") {
  TEST_CASE("random and mutated byte strings round-trip through encode/decode") {
    const std::string text = read_file_text(sample_path());
    std::mt19937_64 rng(20261122);
    int checked = 0;
    for (int i = 0; i < 4000; ++i) {
      std::string s;
      if (i % 2 == 0) {  // random bytes, biased towards the interesting ones
        const size_t len = rng() % 200;
        const char pool[] = {' ', '\n', '\r', '\t', '\'', 'a', 'Z', '5', '.', '<', '|', '>'};
        for (size_t k = 0; k < len; ++k)
          s += (rng() % 3 == 0) ? pool[rng() % sizeof pool] : static_cast<char>(rng() & 0xFF);
      } else {  // a slice of the sample with bit flips, insertions, deletions and truncations
        const size_t start = rng() % text.size();
        s = text.substr(start, rng() % 400);
        const int edits = static_cast<int>(rng() % 6);
        for (int e = 0; e < edits && !s.empty(); ++e) {
          const size_t at = rng() % s.size();
          switch (rng() % 4) {
            case 0: s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8))); break;
            case 1: s.insert(at, std::string(1 + rng() % 4, static_cast<char>(rng() & 0xFF))); break;
            case 2: s.erase(at, 1 + rng() % 8); break;
            default: s.resize(at); break;
          }
        }
        if (i % 7 == 1) s += "<|im_end|>";
      }
      for (PreTokenizer style : {PreTokenizer::Gpt2, PreTokenizer::Qwen2}) {
        std::string joined;
        for (std::string_view p : pretokenize(s, style)) {
          REQUIRE(!p.empty());
          joined += p;
        }
        REQUIRE(joined == s);
        const BpeTokenizer& tok = trained(style);
        REQUIRE(tok.decode(tok.encode(s)) == s);
        ++checked;
      }
    }
    CHECK(checked == 8000);
  }

  TEST_CASE("corrupted vocab.json, merges.txt and tokenizer.json load or throw moon::Error") {
    const std::string vocab = tiny_vocab_json();
    const std::string merges = kTinyMerges;
    const std::string tjson = tiny_tokenizer_json(false, R"({"type": "ByteLevel"})");
    std::mt19937_64 rng(4);
    auto mutate = [&](std::string s) {
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !s.empty(); ++e) {
        const size_t at = rng() % s.size();
        switch (rng() % 6) {
          case 0: s[at] = static_cast<char>(s[at] ^ (1 << (rng() % 8))); break;
          case 1: s.resize(at); break;
          case 2: s.insert(at, 1, "{}[]\",: 0123456789-e\\\n"[rng() % 23]); break;
          case 3: s.erase(at, 1 + rng() % 16); break;
          case 4: {  // an id or a number edited: digits replaced by a big or negative value
            const size_t digit = s.find_first_of("0123456789", at);
            if (digit != std::string::npos) s.replace(digit, 1, rng() % 2 ? "99999999999" : "-1");
            break;
          }
          default: s.insert(at, s.substr(rng() % s.size(), rng() % 32)); break;
        }
      }
      return s;
    };
    int loaded = 0, errors = 0;
    for (int i = 0; i < 1500; ++i) {
      const int which = i % 3;
      try {
        BpeTokenizer t = which == 0   ? BpeTokenizer::from_strings(mutate(vocab), merges, "vocab.json", "merges.txt")
                         : which == 1 ? BpeTokenizer::from_strings(vocab, mutate(merges), "vocab.json", "merges.txt")
                                      : BpeTokenizer::from_tokenizer_json_string(mutate(tjson), "tokenizer.json");
        const std::string probe = "hello world <|endoftext|> \xFF";
        REQUIRE(t.decode(t.encode(probe)) == probe);
        ++loaded;
      } catch (const moon::Error& e) {
        const std::string msg = e.what();
        CHECK((contains(msg, "vocab.json") || contains(msg, "merges.txt") || contains(msg, "tokenizer.json")));
        ++errors;
      }
    }
    CHECK(loaded > 50);
    CHECK(errors > 500);
  }
}
