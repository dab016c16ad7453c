// Byte-level BPE training: learns merges from a corpus the way GPT-2's tokenizer was built.
//
//   BpeTokenizer tok = train_bpe({text1, text2}, 4096, PreTokenizer::Gpt2);
//
// The texts are pre-tokenised (the same splitting that encoding uses) and identical pieces are counted
// once with their frequency. Starting from the 256 single bytes, the most frequent adjacent pair of
// tokens across all pieces is merged into a new token, again and again, until the vocabulary (including
// the special tokens appended at its end) has `vocab_size` tokens. Ties go to the pair whose (left id,
// right id) is smallest, so training is deterministic. Pair counts are updated incrementally: a merge
// only revisits the pieces that contain the merged pair.
#pragma once

#include <string>
#include <vector>

#include "io/bpe_tokenizer.h"

namespace moon::io {

// Ids: 0..255 are the bytes (id = byte value), then one id per merge, then the special tokens. Stops early
// (a smaller vocabulary) when no pair occurs any more. vocab_size must be >= 256 + the special tokens.
BpeTokenizer train_bpe(const std::vector<std::string>& texts, int vocab_size, PreTokenizer style);

}  // namespace moon::io
