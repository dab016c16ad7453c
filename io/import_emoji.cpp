// `moon data import emoji`: Google's Noto emoji from the npm package emoji-datasource-google (pinned
// version, installed under ${MOON_CACHE}/npm). Each emoji with a Google image is a product: its name as the
// title, category and subcategory as the category path, its short names as attributes and queries, and the
// 64x64 PNG as its image.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/dataset_split.h"
#include "io/file_util.h"
#include "io/importer.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const char* const kPackage = "emoji-datasource-google";
const char* const kVersion = "16.0.0";  // checked to ship emoji.json and img/google/64/*.png

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string spaced(std::string s) {
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

// The string field `key` of `entry`, or "" when it is absent or not a string.
std::string text_field(const Json& entry, const char* key) {
  auto it = entry.find(key);
  return it != entry.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

ImportSummary import_emoji(const ImportOptions& options) {
  const double start = now_seconds();
  const std::string root =
      options.source_dir.empty() ? ensure_npm_package(kPackage, kVersion, "emoji.json", options.install) : options.source_dir;
  const std::string json_path = root + "/emoji.json", image_root = root + "/img/google/64";
  Json entries;
  try {
    entries = Json::parse(read_file_text(json_path));
  } catch (const Json::exception& e) {
    fail(json_path, ": not valid JSON (", e.what(), "); reinstall ", kPackage, "@", kVersion);
  }
  MOON_CHECK(entries.is_array(), json_path, ": expected an array of emoji, found ", entries.type_name());

  ImportSummary summary;
  summary.source = "emoji";
  std::vector<Product> candidates;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Json& e = entries[i];
    const std::string unified = text_field(e, "unified"), image = text_field(e, "image");
    const std::string category = text_field(e, "category"), subcategory = text_field(e, "subcategory");
    MOON_CHECK(e.is_object() && !unified.empty() && !image.empty() && !category.empty(), json_path, ": entry ", i,
               " lacks one of the fields unified, image, category");
    auto google = e.find("has_img_google");
    if (google == e.end() || !google->is_boolean() || !google->get<bool>()) {
      ++summary.skipped["no Google image (has_img_google is false)"];
      continue;
    }
    if (image.find('/') != std::string::npos || image.find("..") != std::string::npos ||
        !fs::exists(image_root + "/" + image)) {
      ++summary.skipped["image file missing from img/google/64"];
      continue;
    }
    std::vector<std::string> short_names;
    if (auto names = e.find("short_names"); names != e.end() && names->is_array())
      for (const Json& n : *names)
        if (n.is_string()) short_names.push_back(n.get<std::string>());
    std::string name = lower(text_field(e, "name"));
    if (name.empty()) name = spaced(text_field(e, "short_name"));
    if (name.empty()) name = lower(unified);

    Product p;
    p.id = "emoji/" + lower(unified);
    p.title = name;
    p.images = {"images/" + image};
    p.category = {category};
    if (!subcategory.empty()) p.category.push_back(subcategory);
    p.attributes = {{"category", category}};
    if (!subcategory.empty()) p.attributes.emplace_back("subcategory", subcategory);
    std::string joined;
    for (const std::string& s : short_names) joined += (joined.empty() ? "" : ", ") + s;
    if (!joined.empty()) p.attributes.emplace_back("short_names", joined);
    for (const std::string& s : short_names)
      if (std::find(p.queries.begin(), p.queries.end(), spaced(s)) == p.queries.end()) p.queries.push_back(spaced(s));
    p.split = assign_split(p.id, options.seed);
    candidates.push_back(std::move(p));
  }

  std::vector<std::string> ids, categories;
  for (const Product& p : candidates) {
    ids.push_back(p.id);
    categories.push_back(p.category[0]);  // spread over the top-level categories
  }
  std::vector<size_t> chosen = spread_order(ids, categories, options.seed);
  if (options.limit != 0 && options.limit < chosen.size()) chosen.resize(options.limit);
  std::sort(chosen.begin(), chosen.end());

  make_dirs(options.out_dir + "/images");
  std::vector<Product> products;
  Progress progress("emoji", chosen.size(), options.progress);
  for (size_t i : chosen) {
    Product& p = candidates[i];
    link_or_copy(image_root + "/" + p.images[0].substr(7), options.out_dir + "/" + p.images[0]);
    products.push_back(std::move(p));
    progress.update(products.size());
  }
  progress.finish(products.size());
  finish_import(options, products, start, summary);
  return summary;
}

}  // namespace moon::io
