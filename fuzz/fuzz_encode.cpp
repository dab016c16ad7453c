// libFuzzer target: encoding arbitrary bytes (invalid UTF-8 included) with a small trained tokenizer, in
// both pre-tokeniser styles; decode(encode(x)) must give x back.
#include <cstdlib>

#include "fuzz/fuzz_common.h"
#include "io/bpe_trainer.h"

namespace {
const moon::io::BpeTokenizer& tokenizer(moon::io::PreTokenizer style) {
  static const moon::io::BpeTokenizer gpt2 = moon::io::train_bpe(
      {"the quick brown fox jumps over the lazy dog's back, 123 times!\n\n  café 中文 🙂"}, 320,
      moon::io::PreTokenizer::Gpt2);
  static const moon::io::BpeTokenizer qwen2 = moon::io::train_bpe(
      {"the quick brown fox jumps over the lazy dog's back, 123 times!\n\n  café 中文 🙂"}, 320,
      moon::io::PreTokenizer::Qwen2);
  return style == moon::io::PreTokenizer::Gpt2 ? gpt2 : qwen2;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = moon_fuzz_text(data, size);
  for (auto style : {moon::io::PreTokenizer::Gpt2, moon::io::PreTokenizer::Qwen2}) {
    const auto& tok = tokenizer(style);
    if (tok.decode(tok.encode(text)) != text) std::abort();
  }
  return 0;
}
