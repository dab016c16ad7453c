// `moon generate`: the reasoning a model writes between <think> and </think> for a product (an image, a text,
// or the first products of a manifest), decoded with the tokenizer. Greedy by default; --temperature samples.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "io/bpe_tokenizer.h"
#include "io/data_loader.h"
#include "io/image.h"
#include "io/manifest_reader.h"
#include "model/config.h"
#include "model/embed.h"
#include "model/generate.h"
#include "model/inputs.h"
#include "runtime/error.h"

namespace moon::cli {
namespace {

const char* const kUsage =
    "usage: moon generate (--model CKPT | --config CFG) (--image FILE | --text STR | --manifest M [--split S]\n"
    "                     [--limit N]) [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--tokenizer T]\n"
    "                     [--samples K]\n"
    "  Prints, per product, its id and title and the reasoning the model writes after <think> (up to </think>),\n"
    "  decoded with the tokenizer.\n"
    "  --model        a moon checkpoint (file, folder or sharded index); --config CFG instead runs fresh seeded\n"
    "                 weights of a config (tiny, small, base or a JSON path)\n"
    "  --image/--text one product: an image, a text, or both together\n"
    "  --manifest     a product manifest (docs/manifest.md); --split keeps one split; --limit N products\n"
    "                 (default 8)\n"
    "  --max-tokens   new tokens per reasoning (default 32)\n"
    "  --temperature  0 (default) is greedy; > 0 samples from softmax(logits / T)\n"
    "  --top-p        nucleus sampling mass (default 1)\n"
    "  --seed         sampling seed (default 0)\n"
    "  --samples K    reasonings per product (default 1; K > 1 needs --temperature > 0)\n"
    "  --tokenizer    a tokenizer folder or tokenizer.json; default: the checkpoint's moon.tokenizer, else the\n"
    "                 byte-level tokenizer (256 bytes + specials) when it fits the model's vocabulary\n";

constexpr int64_t kTextTokens = 64;  // text tokens kept per product
constexpr int64_t kBatch = 16;       // manifest products per generate() call

// --model (a checkpoint or a `moon train` run folder) or --config (fresh seeded weights).
model::LoadedModel load_model(const Args& args) {
  const std::string ckpt = flag_value(args, "--model", ""), config = flag_value(args, "--config", "");
  MOON_CHECK(ckpt.empty() != config.empty(),
             "pass exactly one of --model CKPT (a moon checkpoint) and --config CFG (fresh weights)");
  return model::load_model_or_config(ckpt, config);
}

// One product to reason about: what to print before its reasoning, and its prompt row.
struct Item {
  std::string label;
  model::InputRow row;
};

// Generated ids as text: the tokenizer's bytes (ids it does not know as <|id:N|>), control bytes escaped.
std::string decode(const io::BpeTokenizer& tok, const std::vector<int64_t>& ids) {
  std::string raw;
  for (int64_t id : ids)
    raw += id >= 0 && id < tok.vocab_size() ? tok.decode({static_cast<int32_t>(id)}) : "<|id:" + std::to_string(id) + "|>";
  std::string out;
  for (unsigned char c : raw) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

struct Sampling {
  model::GenerateOptions gen;
  int64_t samples = 1;
};

// Generates `samples` reasonings for each item (rows of one batch) and prints them.
void reason_about(const model::MoonModel& model, const io::BpeTokenizer& tok, const model::SpecialTokens& special,
                  const std::vector<Item>& items, const Tensor& images, const Sampling& sampling) {
  std::vector<model::InputRow> rows;
  for (const Item& item : items)
    for (int64_t k = 0; k < sampling.samples; ++k) {
      rows.push_back(item.row);
      rows.back().prompt = true;
    }
  const model::ModelBatch batch = model::assemble(rows, images, special, model.config());
  const std::vector<std::vector<int64_t>> out = model::generate(model, batch, sampling.gen);
  for (size_t i = 0; i < items.size(); ++i) {
    std::printf("== %s\n", items[i].label.c_str());
    for (int64_t k = 0; k < sampling.samples; ++k) {
      std::vector<int64_t> tokens = out[i * static_cast<size_t>(sampling.samples) + static_cast<size_t>(k)];
      const bool closed = !tokens.empty() && tokens.back() == special.think_end;
      if (closed) tokens.pop_back();
      if (sampling.samples > 1) std::printf("[%lld] ", static_cast<long long>(k + 1));
      std::printf("<think>%s%s\n", decode(tok, tokens).c_str(), closed ? "</think>" : " ... (no </think> within --max-tokens)");
    }
  }
  std::fflush(stdout);
}

// One product from --image and/or --text.
void generate_single(const Args& args, const model::MoonModel& model, const io::BpeTokenizer& tok,
                     const Sampling& sampling) {
  const model::ModelConfig& config = model.config();
  Item item;
  Tensor images;
  const std::string image = flag_value(args, "--image", ""), text = flag_value(args, "--text", "");
  if (has_flag(args, "--image")) {
    MOON_CHECK(!image.empty(), "--image needs a FILE");
    images = io::preprocess(io::load_image(image, 3), model::image_preprocess_options(config)).unsqueeze(0);  // (1, 3, S, S)
    item.row.image = 0;
  }
  if (has_flag(args, "--text")) {
    MOON_CHECK(!text.empty(), "--text needs a non-empty STR");
    for (int32_t id : tok.encode(text)) item.row.text.push_back(id);
    if (static_cast<int64_t>(item.row.text.size()) > kTextTokens) item.row.text.resize(kTextTokens);
  }
  item.label = image.empty() ? text : text.empty() ? image : image + " | " + text;
  model::check_vocab(item.row, config.decoder.vocab, "--text");
  reason_about(model, tok, model::SpecialTokens::from(tok), {item}, images, sampling);
}

// The first --limit products of a manifest (after --split), in file order.
void generate_manifest(const Args& args, const model::MoonModel& model,
                       const std::shared_ptr<const io::BpeTokenizer>& tok, const Sampling& sampling) {
  const model::ModelConfig& config = model.config();
  io::LoadOptions load;
  load.split = flag_value(args, "--split", "");
  load.limit = static_cast<size_t>(unsigned_flag(args, "--limit", 8, 1, 1 << 20));
  auto manifest = std::make_shared<const io::Manifest>(
      io::load_manifest(flag_value(args, "--manifest", ""), io::BadRecords::Stop, load));
  MOON_CHECK(!manifest->products.empty(), manifest->path, ": no products",
             load.split.empty() ? std::string() : " in split '" + load.split + "'", " to generate for");
  const int64_t batch = std::min<int64_t>(kBatch, static_cast<int64_t>(manifest->products.size()));
  io::DataLoader loader(manifest, tok, model::eval_loader_options(config, batch, kTextTokens, 0));
  const model::SpecialTokens special = model::SpecialTokens::from(*tok);
  for (int64_t k = 0; k < loader.batches_per_epoch(); ++k) {
    const io::Batch b = loader.next();
    const std::vector<model::InputRow> rows = model::rows_from_loader(b);
    const std::vector<int64_t> index = b.product_index.to_vector<int64_t>();
    std::vector<Item> items;
    for (size_t r = 0; r < rows.size(); ++r) {
      const io::Product& p = manifest->products[static_cast<size_t>(index[r])];
      items.push_back({p.id + ": " + p.title, rows[r]});
      model::check_vocab(rows[r], config.decoder.vocab, manifest->path + ":" + std::to_string(p.line) + ": product '" + p.id + "'");
    }
    reason_about(model, *tok, special, items, b.images, sampling);
  }
}

}  // namespace

MOON_COMMAND(generate, 63, "the reasoning a model writes for a product (<think> ... </think>), decoded")(const Args& args) {
  if (args.empty() || has_flag(args, "--help") || has_flag(args, "-h")) {
    std::printf("%s", kUsage);
    return args.empty() ? 1 : 0;
  }
  const std::vector<std::string> valued = {"--model",      "--config",      "--manifest", "--split", "--limit",
                                           "--image",      "--text",        "--max-tokens", "--temperature",
                                           "--top-p",      "--seed",        "--tokenizer", "--samples"};
  std::vector<std::string> known = valued;
  known.push_back("--help");
  check_flags("generate", args, known);
  const std::vector<std::string> extra = positionals(args, valued);
  MOON_CHECK(extra.empty(), "unexpected argument '", extra.empty() ? "" : extra[0], "' (try `moon generate --help`)");
  const bool manifest = has_flag(args, "--manifest"), single = has_flag(args, "--image") || has_flag(args, "--text");
  MOON_CHECK(manifest != single, "pass either --manifest M or --image FILE / --text STR (try `moon generate --help`)");
  MOON_CHECK(manifest || (!has_flag(args, "--split") && !has_flag(args, "--limit")),
             "--split and --limit go with --manifest M");

  Sampling sampling;
  sampling.gen.max_new_tokens = static_cast<int64_t>(unsigned_flag(args, "--max-tokens", 32, 1, 1 << 16));
  sampling.gen.temperature = number_flag(args, "--temperature", 0.0, 0.0, 1e6);
  sampling.gen.top_p = number_flag(args, "--top-p", 1.0, 0.0, 1.0);
  sampling.gen.seed = unsigned_flag(args, "--seed", 0, 0, UINT64_MAX);
  sampling.samples = static_cast<int64_t>(unsigned_flag(args, "--samples", 1, 1, 1024));
  MOON_CHECK(sampling.samples == 1 || sampling.gen.temperature > 0, "--samples ", sampling.samples,
             " with greedy decoding gives identical reasonings; pass --temperature T > 0 (e.g. 1) to sample");

  model::LoadedModel loaded = load_model(args);
  const auto tok =
      model::pick_tokenizer(flag_value(args, "--tokenizer", ""), loaded.metadata, loaded.model->config().decoder.vocab)
          .tokenizer;
  sampling.gen.stop_token = model::SpecialTokens::from(*tok).think_end;
  if (manifest) {
    generate_manifest(args, *loaded.model, tok, sampling);
  } else {
    generate_single(args, *loaded.model, *tok, sampling);
  }
  return 0;
}

}  // namespace moon::cli
