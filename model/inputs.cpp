// Input assembly: rows of (text, image, reasoning) -> one right-padded ModelBatch (docs/model.md section 1).
#include "model/inputs.h"

#include <algorithm>

#include "io/bpe_tokenizer.h"
#include "io/data_loader.h"
#include "ops/index.h"
#include "runtime/error.h"

namespace moon::model {

SpecialTokens SpecialTokens::from(const io::BpeTokenizer& tok) {
  SpecialTokens s;
  s.eos = tok.special_id("<|endoftext|>");
  s.im_start = tok.special_id("<|im_start|>");
  s.image = tok.special_id("<image>");
  s.image_end = tok.special_id("</image>");
  s.think = tok.special_id("<think>");
  s.think_end = tok.special_id("</think>");
  s.emb = tok.special_id("<emb>");
  s.pad = tok.special_id("<pad>");
  return s;
}

namespace {

// What one position of a row holds.
enum class Kind : uint8_t { Marker, Vision, Text, Reasoning };

struct Laid {
  std::vector<int64_t> ids;
  std::vector<Kind> kinds;
  std::vector<int64_t> vision;  // slot per position (-1 off vision)
};

void push(Laid& r, int64_t id, Kind kind, int64_t slot = -1) {
  r.ids.push_back(id), r.kinds.push_back(kind), r.vision.push_back(slot);
}

// Vision tokens per image for images of side `side` (the config's M when side is the config's size).
int64_t vision_tokens_for(const ModelConfig& config, int64_t side) {
  const int64_t P = config.vision.patch_size, m = config.projector.merge;
  MOON_CHECK(side % P == 0, "assemble: image side ", side, " is not a multiple of vision.patch_size ", P);
  const int64_t g = side / P;
  MOON_CHECK(g % m == 0, "assemble: a ", g, "x", g, " patch grid cannot be merged ", m, "x", m,
             "; use an image side that is a multiple of ", P * m);
  return g * g / (m * m);
}

}  // namespace

ModelBatch assemble(const std::vector<InputRow>& rows, const Tensor& images, const SpecialTokens& special,
                    const ModelConfig& config) {
  const int64_t B = static_cast<int64_t>(rows.size());
  MOON_CHECK(B > 0, "assemble: no rows");
  int64_t M = config.vision_tokens();
  if (images.defined()) {
    MOON_CHECK(images.dim() == 4 && images.size(1) == 3 && images.size(2) == images.size(3),
               "assemble: images must be (n, 3, S, S), got ", images.desc());
    M = vision_tokens_for(config, images.size(2));
  }
  std::vector<Laid> laid(B);
  std::vector<int64_t> used_images, image_row(B, -1), modality(B, 0);
  for (int64_t r = 0; r < B; ++r) {
    const InputRow& in = rows[r];
    const bool has_image = in.image >= 0;
    if (has_image) {
      MOON_CHECK(images.defined() && in.image < images.size(0), "assemble: row ", r, " points at image ", in.image,
                 " but ", images.defined() ? images.size(0) : 0, " images were given");
    }
    MOON_CHECK(has_image || !in.text.empty() || (in.has_reasoning && !in.reasoning.empty()),
               "assemble: row ", r, " has neither text nor an image");
    for (int64_t id : in.text)
      MOON_CHECK(id >= 0 && id < config.decoder.vocab, "assemble: row ", r, " has token id ", id,
                 " outside the vocabulary [0, ", config.decoder.vocab, ") of config ", config.name);
    Laid& l = laid[r];
    push(l, special.im_start, Kind::Marker);
    if (has_image) {
      const int64_t slot0 = static_cast<int64_t>(used_images.size()) * M;
      image_row[r] = static_cast<int64_t>(used_images.size());
      used_images.push_back(in.image);
      push(l, special.image, Kind::Marker);
      for (int64_t t = 0; t < M; ++t) push(l, special.pad, Kind::Vision, slot0 + t);
      push(l, special.image_end, Kind::Marker);
    }
    for (int64_t id : in.text) push(l, id, Kind::Text);
    modality[r] = has_image ? (in.text.empty() ? 1 : 2) : 0;
    if (in.prompt) {
      push(l, special.think, Kind::Marker);
      continue;
    }
    if (in.has_reasoning) {
      push(l, special.think, Kind::Marker);
      for (int64_t id : in.reasoning) push(l, id, Kind::Reasoning);
      push(l, special.think_end, Kind::Marker);
    }
    push(l, special.emb, Kind::Marker);
  }
  int64_t T = 0;
  for (const auto& l : laid) T = std::max<int64_t>(T, static_cast<int64_t>(l.ids.size()));

  std::vector<int64_t> ids(B * T, special.pad), positions(B * T, 0), slots(B * T, -1), emb_index(B);
  std::vector<uint8_t> keep(B * T, 0), pool(B * T, 0), text(B * T, 0), has_image(B);
  for (int64_t r = 0; r < B; ++r) {
    const Laid& l = laid[r];
    const int64_t n = static_cast<int64_t>(l.ids.size());
    for (int64_t t = 0; t < n; ++t) {
      const int64_t i = r * T + t;
      ids[i] = l.ids[t], keep[i] = 1, positions[i] = t, slots[i] = l.vision[t];
      pool[i] = l.kinds[t] != Kind::Marker;
      text[i] = l.kinds[t] == Kind::Text;
    }
    emb_index[r] = n - 1;
    has_image[r] = image_row[r] >= 0;
  }
  ModelBatch b;
  if (!used_images.empty())
    b.pixels = index_select(images, 0, from_vector(used_images, {(int64_t)used_images.size()}, DType::I64)).contiguous();
  b.token_ids = from_vector(ids, {B, T}, DType::I64);
  b.keep = from_vector(keep, {B, T}, DType::U8);
  b.positions = from_vector(positions, {B, T}, DType::I64);
  b.vision_slot = from_vector(slots, {B, T}, DType::I64);
  b.pool_mask = from_vector(pool, {B, T}, DType::U8);
  b.text_mask = from_vector(text, {B, T}, DType::U8);
  b.emb_index = from_vector(emb_index, {B}, DType::I64);
  b.modality = from_vector(modality, {B}, DType::I64);
  b.image_row = from_vector(image_row, {B}, DType::I64);
  b.has_image = from_vector(has_image, {B}, DType::U8);
  return b;
}

std::vector<std::pair<std::string, Tensor>> ModelBatch::named() const {
  std::vector<std::pair<std::string, Tensor>> out = {
      {"token_ids", token_ids}, {"keep", keep},           {"positions", positions}, {"vision_slot", vision_slot},
      {"pool_mask", pool_mask}, {"text_mask", text_mask}, {"emb_index", emb_index}, {"modality", modality},
      {"image_row", image_row}, {"has_image", has_image}};
  if (pixels.defined()) out.emplace_back("pixels", pixels);
  return out;
}

ModelBatch ModelBatch::from_named(const std::map<std::string, Tensor>& tensors, const std::string& origin) {
  auto get = [&](const char* name, DType dtype, int64_t rank) {
    auto it = tensors.find(name);
    if (it == tensors.end()) fail(origin, ": the batch has no tensor ", name);
    const Tensor& t = it->second;
    if (t.dtype() != dtype || t.dim() != rank)
      fail(origin, ": batch tensor ", name, " is ", t.desc(), ", expected ", dtype_name(dtype), " of rank ", rank);
    return t;
  };
  ModelBatch b;
  b.token_ids = get("token_ids", DType::I64, 2);
  b.keep = get("keep", DType::U8, 2);
  b.positions = get("positions", DType::I64, 2);
  b.vision_slot = get("vision_slot", DType::I64, 2);
  b.pool_mask = get("pool_mask", DType::U8, 2);
  b.text_mask = get("text_mask", DType::U8, 2);
  b.emb_index = get("emb_index", DType::I64, 1);
  b.modality = get("modality", DType::I64, 1);
  b.image_row = get("image_row", DType::I64, 1);
  b.has_image = get("has_image", DType::U8, 1);
  if (tensors.count("pixels")) b.pixels = get("pixels", DType::F32, 4);
  for (const auto* t : {&b.keep, &b.positions, &b.vision_slot, &b.pool_mask, &b.text_mask})
    if (t->shape() != b.token_ids.shape())
      fail(origin, ": batch tensors disagree: token_ids is ", b.token_ids.shape_str(), " but another is ",
           t->shape_str());
  return b;
}

PlacedRows place_rows(const Tensor& table, const Tensor& slots) {
  std::vector<int64_t> index = slots.contiguous().to_vector<int64_t>();  // (numel(S))
  std::vector<uint8_t> at(index.size());
  for (size_t i = 0; i < index.size(); ++i) {
    at[i] = index[i] >= 0;
    if (index[i] < 0) index[i] = 0;
  }
  Shape rows_shape = slots.shape(), mask_shape = slots.shape();
  for (int64_t d = 1; d < table.dim(); ++d) rows_shape.push_back(table.size(d)), mask_shape.push_back(1);
  PlacedRows out;
  out.rows = index_select(table, 0, from_vector(index, {static_cast<int64_t>(index.size())}, DType::I64))
                 .reshape(rows_shape);
  out.mask = from_vector(at, mask_shape, DType::U8);
  return out;
}

std::vector<InputRow> rows_from_loader(const io::Batch& batch, Use use) {
  const int64_t B = batch.token_ids.size(0), T = batch.token_ids.size(1);
  std::vector<int64_t> ids = batch.token_ids.to_vector<int64_t>(), mask = batch.attention_mask.to_vector<int64_t>(),
                       has = batch.has_image.to_vector<int64_t>();
  std::vector<InputRow> rows(B);
  for (int64_t b = 0; b < B; ++b) {
    InputRow& r = rows[b];
    for (int64_t t = 0; t < T; ++t)
      if (mask[b * T + t]) r.text.push_back(ids[b * T + t]);
    if (has[b]) r.image = b;
    if (use == Use::ImageOnly && r.image >= 0) r.text.clear();
    if (use == Use::TextOnly && !r.text.empty()) r.image = -1;
  }
  return rows;
}

}  // namespace moon::model
