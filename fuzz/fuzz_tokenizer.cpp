// libFuzzer target: tokenizer.json loading; when it loads, encode/decode must round-trip the input bytes.
#include <cstdlib>

#include "fuzz/fuzz_common.h"
#include "io/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = moon_fuzz_text(data, size);
  return moon_fuzz_run([&] {
    const auto tok = moon::io::BpeTokenizer::from_tokenizer_json_string(text, "fuzz-tokenizer.json");
    const std::vector<int32_t> ids = tok.encode(text);
    if (tok.decode(ids) != text) std::abort();  // byte-level BPE must reproduce any input exactly
  });
}
