// Input assembly (docs/model.md section 1): products with an image, text, or both (and optional reasoning
// tokens) become one padded batch laid out as <|im_start|> <image> vision </image> text [<think> .. </think>] <emb>.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "model/config.h"
#include "runtime/tensor.h"

namespace moon::io {
class BpeTokenizer;
struct Batch;
}  // namespace moon::io

namespace moon::model {

// The ids of the marker tokens (from the tokenizer: io::kSpecialTokens).
struct SpecialTokens {
  int64_t im_start = 1, image = 3, image_end = 4, think = 5, think_end = 6, emb = 7, pad = 8, eos = 0;
  static SpecialTokens from(const io::BpeTokenizer& tokenizer);
};

// One row before assembly.
struct InputRow {
  std::vector<int64_t> text;       // title + attribute token ids (may be empty)
  int64_t image = -1;              // index into the pixels tensor passed to assemble(), or -1 for none
  std::vector<int64_t> reasoning;  // tokens between <think> and </think>; with has_reasoning only
  bool has_reasoning = false;      // emit <think> reasoning </think>
  bool prompt = false;             // a generation prompt: the row ends right after <think>
};

struct ModelBatch {
  Tensor pixels;       // (Bi, 3, S, S) f32: images of the rows that have one, in row order
  Tensor token_ids;    // (B, T) i64: <pad> at vision and padding positions
  Tensor keep;         // (B, T) u8: 1 on real tokens (vision tokens included)
  Tensor positions;    // (B, T) i64: cumsum(keep) - 1 on kept positions, 0 on padding
  Tensor vision_slot;  // (B, T) i64: -1, or i*M + t for token t of the i-th image
  Tensor pool_mask;    // (B, T) u8: vision, text and reasoning tokens (mean pooling)
  Tensor text_mask;    // (B, T) u8: text tokens (fusion's textual keys)
  Tensor emb_index;    // (B) i64: last kept position (<emb>, or <think> for prompts)
  Tensor modality;     // (B) i64: 0 text only, 1 image only, 2 image + text
  Tensor image_row;    // (B) i64: index in pixels, or -1
  Tensor has_image;    // (B) u8
  int64_t rows() const { return token_ids.size(0); }
  // The tensors by name (the names above), for dumping to safetensors and reading back.
  std::vector<std::pair<std::string, Tensor>> named() const;
  static ModelBatch from_named(const std::map<std::string, Tensor>& tensors, const std::string& origin);
};

// Lays out `rows`. images (n, 3, S, S) f32 holds the pictures rows point at (undefined if none); only the
// images some row uses are copied into pixels. M = config.vision_tokens() at the config's image size, or
// recomputed from S when the images have another size. A row with neither text nor image is an error.
ModelBatch assemble(const std::vector<InputRow>& rows, const Tensor& images, const SpecialTokens& special,
                    const ModelConfig& config);

// Rows of `table` (n, ...) gathered at `slots` (any shape S, i64; -1 = no row): `rows` (S..., ...) holds
// table[slot] where slot >= 0 and table[0] elsewhere, `mask` (S..., 1, ...) u8 marks slot >= 0, so that
// where(mask, rows, other) places the rows (vision tokens, FIRE features, a row's image features).
// Differentiable in table; masked positions must be dropped by the caller's where().
struct PlacedRows {
  Tensor rows;
  Tensor mask;
};
PlacedRows place_rows(const Tensor& table, const Tensor& slots);

// Which modalities of a loader batch to use.
enum class Use { Both, ImageOnly, TextOnly };
// A data-loader batch as model rows: its token_ids / attention_mask give the text, has_image the image
// (a product without text or without image falls back to what it has).
std::vector<InputRow> rows_from_loader(const io::Batch& batch, Use use = Use::Both);

}  // namespace moon::model
