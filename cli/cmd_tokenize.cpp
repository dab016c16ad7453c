// `moon tokenize`: encode stdin into token ids with a byte-level BPE tokenizer, decode ids back into text,
// or train a new tokenizer from corpus files.
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/bpe_tokenizer.h"
#include "io/bpe_trainer.h"
#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::cli {

namespace {

const char* kUsage =
    "usage: moon tokenize --tokenizer PATH [--decode] [--json] < input\n"
    "       moon tokenize --train CORPUS_FILE... --vocab-size N --out FOLDER [--style gpt2|qwen2]\n"
    "  Encodes the text on stdin and prints its token ids separated by spaces (--json: a JSON array).\n"
    "  --decode reads ids (separated by spaces, commas or newlines; a JSON array works) and prints the text\n"
    "  (--json: as a JSON string). PATH is a folder holding tokenizer.json, vocab.json + merges.txt or\n"
    "  encoder.json + vocab.bpe (GPT-2's: scripts/fetch_gpt2_tokenizer.sh prints that folder), or a\n"
    "  tokenizer.json file. Special tokens such as <|endoftext|> and <|im_start|> in the text become their ids.\n"
    "  --train learns a byte-level BPE vocabulary of N tokens (special tokens included) from the corpus files\n"
    "  and writes vocab.json, merges.txt and tokenizer.json into FOLDER; --style picks the pre-tokenisation\n"
    "  (gpt2, the default, or qwen2: digits one by one).\n";

std::string read_stdin() {
  std::string text;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) text.append(buf, n);
  MOON_CHECK(!std::ferror(stdin), "cannot read stdin");
  return text;
}

// Ids separated by whitespace, commas or JSON brackets.
std::vector<int32_t> parse_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t i = 0, item = 0;
  auto separator = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t' || c == ',' || c == '[' || c == ']'; };
  while (i < text.size()) {
    if (separator(text[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !separator(text[end])) ++end;
    const std::string word = text.substr(i, end - i);
    ++item;
    bool digits = !word.empty() && word.size() <= 9;
    for (size_t k = (word[0] == '-' ? 1 : 0); k < word.size(); ++k) digits = digits && word[k] >= '0' && word[k] <= '9';
    MOON_CHECK(digits && word != "-", "--decode: stdin item ", item, " \"", word.substr(0, 20),
               "\" is not a token id");
    ids.push_back(std::stoi(word));
    i = end;
  }
  return ids;
}

int train(const Args& args) {
  const std::vector<std::string> files = positionals(args, {"--tokenizer", "--vocab-size", "--out", "--style"});
  MOON_CHECK(!files.empty(), "--train: name at least one corpus file (plain UTF-8 text)");
  const std::string out = flag_value(args, "--out", "");
  MOON_CHECK(!out.empty(), "--train: --out FOLDER is required");
  MOON_CHECK(has_flag(args, "--vocab-size"), "--train: --vocab-size N is required (e.g. 4096)");
  const int vocab_size = static_cast<int>(unsigned_flag(args, "--vocab-size", 0, 1, 99999999));
  const std::string style_name = flag_value(args, "--style", "gpt2");
  MOON_CHECK(style_name == "gpt2" || style_name == "qwen2", "--style must be gpt2 or qwen2, got '",
             style_name, "'");
  const io::PreTokenizer style = style_name == "gpt2" ? io::PreTokenizer::Gpt2 : io::PreTokenizer::Qwen2;
  std::vector<std::string> texts;
  size_t bytes = 0;
  for (const std::string& f : files) {
    texts.push_back(io::read_file_text(f));
    bytes += texts.back().size();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const io::BpeTokenizer tok = io::train_bpe(texts, vocab_size, style);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tok.save(out);
  std::printf("trained %d tokens (%zu merges, %s pre-tokenisation) on %zu bytes from %zu file(s) in %.2f s -> %s\n",
              tok.vocab_size(), tok.merge_count(), style_name.c_str(), bytes, files.size(), seconds, out.c_str());
  if (tok.vocab_size() < vocab_size)
    std::printf("note: the corpus ran out of pairs to merge before reaching %d tokens\n", vocab_size);
  return 0;
}

}  // namespace

MOON_COMMAND(tokenize, 40, "encode stdin into token ids (--decode them back), or --train a BPE tokenizer")
(const Args& args) {
  if (has_flag(args, "--help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  check_flags("tokenize", args, {"--help", "--tokenizer", "--decode", "--json", "--train", "--vocab-size", "--out", "--style"});
  if (has_flag(args, "--train")) return train(args);
  const std::string path = flag_value(args, "--tokenizer", "");
  MOON_CHECK(!path.empty(), "--tokenizer PATH is required (a folder with tokenizer.json or vocab.json + ",
             "merges.txt; see `moon tokenize --help`)");
  MOON_CHECK(positionals(args, {"--tokenizer"}).empty(), "unexpected argument '",
             positionals(args, {"--tokenizer"})[0], "' (the text comes on stdin)");
  const io::BpeTokenizer tok = io::BpeTokenizer::load(path);
  const std::string input = read_stdin();
  const bool json = has_flag(args, "--json");
  if (has_flag(args, "--decode")) {
    const std::string text = tok.decode(parse_ids(input));
    if (json) {
      const std::string s = nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      std::fwrite(s.data(), 1, s.size(), stdout);
    } else {
      std::fwrite(text.data(), 1, text.size(), stdout);
    }
    return 0;
  }
  const std::vector<int32_t> ids = tok.encode(input);
  std::string line = json ? "[" : "";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += json ? ", " : " ";
    line += std::to_string(ids[i]);
  }
  line += json ? "]\n" : "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  return 0;
}

}  // namespace moon::cli
