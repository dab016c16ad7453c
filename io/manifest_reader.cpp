// Whole-manifest loading with the skip/stop policy, and its statistics (see io/manifest_reader.h).
#include "io/manifest_reader.h"

#include <sys/stat.h>

#include <filesystem>
#include <set>
#include <unordered_map>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

bool is_blank(std::string_view line) {
  for (char c : line)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string folder_of(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

}  // namespace

std::string image_path(const Manifest& manifest, const Product& product, size_t i) {
  MOON_CHECK(i < product.images.size(), manifest.path, ":", product.line, ": product '", product.id, "' has ",
             product.images.size(), " images, asked for image ", i);
  return manifest.folder + "/" + product.images[i];
}

Manifest load_manifest(const std::string& path, BadRecords policy, const LoadOptions& options) {
  Manifest m;
  m.path = path;
  m.folder = folder_of(path);
  const MappedFile file(path);
  std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 byte-order mark

  std::unordered_map<std::string, size_t> first_line_of_id;
  // Records a bad line under the policy.
  auto bad = [&](size_t line_no, std::string reason) {
    if (policy == BadRecords::Stop) fail(path, ":", line_no, ": ", reason);
    m.issues.push_back({line_no, std::move(reason)});
  };

  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    m.lines_read = line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (is_blank(line)) continue;

    Product product;
    if (std::string reason = try_parse_product(line, product); !reason.empty()) {
      bad(line_no, std::move(reason));
      continue;
    }
    product.line = line_no;
    auto [it, fresh] = first_line_of_id.emplace(product.id, line_no);
    if (!fresh) {
      bad(line_no, "duplicate id '" + product.id + "' (first seen on line " + std::to_string(it->second) + ")");
      continue;
    }
    if (options.check_images) {
      std::string missing;
      for (size_t i = 0; i < product.images.size() && missing.empty(); ++i) {
        const std::string full = m.folder + "/" + product.images[i];
        if (!is_regular_file(full)) missing = "image " + std::to_string(i) + " not found: " + full;
      }
      if (!missing.empty()) {
        bad(line_no, missing);
        continue;
      }
    }
    if (!options.split.empty() && product.split != options.split) continue;
    m.products.push_back(std::move(product));
    if (options.limit != 0 && m.products.size() >= options.limit) break;
  }
  return m;
}

ManifestStats manifest_stats(const Manifest& manifest) {
  ManifestStats s;
  std::set<std::vector<std::string>> leaves;
  for (const Product& p : manifest.products) {
    ++s.products;
    s.images += p.images.size();
    s.text_only += p.images.empty();
    s.image_only += p.title.empty();
    s.with_queries += !p.queries.empty();
    ++s.per_split[p.split];
    ++s.per_category[p.category.empty() ? std::string("(none)") : p.category[0]];
    leaves.insert(p.category);
  }
  s.leaf_categories = leaves.size();
  return s;
}

}  // namespace moon::io
