// `moon data import openclipart`: the public-domain clip art of Debian's openclipart-png and
// openclipart-svg. Each PNG is a product; its title, description and keywords come from the RDF metadata of
// the matching SVG, its category path is its folder under png/. PNGs without an SVG, with metadata that
// does not parse, that are not readable PNGs, or that are symbolic links to another PNG are skipped and
// counted.
#include <stb/stb_image.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "io/dataset_split.h"
#include "io/file_util.h"
#include "io/importer.h"
#include "io/svg_metadata.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

namespace fs = std::filesystem;

const char* const kDefaultDir = "/usr/share/openclipart";

// Every PNG under `png_root`, as paths relative to it ("animals/bird/owl_01.png"), sorted. Symbolic links
// (the same art filed under a second category: 1,221 of them in Debian's package) are counted in
// `links` and left out, so that one picture never lands in two splits.
std::vector<std::string> list_pngs(const std::string& png_root, size_t& links) {
  std::vector<std::string> out;
  links = 0;
  for (const auto& entry : fs::recursive_directory_iterator(png_root)) {
    if (entry.path().extension() != ".png") continue;
    if (entry.is_symlink()) {
      ++links;
    } else if (entry.is_regular_file()) {
      out.push_back(entry.path().lexically_relative(png_root).generic_string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// "owl_01" -> "owl 01": a readable title from a file name, for art without a dc:title.
std::string title_from_stem(std::string stem) {
  std::replace(stem.begin(), stem.end(), '_', ' ');
  std::replace(stem.begin(), stem.end(), '-', ' ');
  return stem;
}

// "20990x29700" when the PNG header of `path` declares a side over 16384 px (stb_image's limit), else "".
std::string png_header_size(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return "";
  unsigned char head[24] = {};  // signature (8), IHDR length and type (8), width (4), height (4)
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  if (n < sizeof head || std::memcmp(head, "\x89PNG\r\n\x1a\n", 8) != 0) return "";
  auto be32 = [&](int at) { return (uint32_t(head[at]) << 24) | (uint32_t(head[at + 1]) << 16) | (uint32_t(head[at + 2]) << 8) | head[at + 3]; };
  const uint32_t width = be32(16), height = be32(20);
  if (width <= 16384 && height <= 16384) return "";
  return std::to_string(width) + "x" + std::to_string(height);
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

}  // namespace

ImportSummary import_openclipart(const ImportOptions& options) {
  const double start = now_seconds();
  std::string root = options.source_dir;
  if (root.empty()) {
    root = kDefaultDir;
    ensure_apt_package("openclipart-png", root + "/png", options.install);
    ensure_apt_package("openclipart-svg", root + "/svg", options.install);
  }
  const std::string png_root = root + "/png", svg_root = root + "/svg";
  MOON_CHECK(fs::is_directory(png_root) && fs::is_directory(svg_root), root,
             ": expected the folders png/ and svg/ (as Debian's openclipart-png and openclipart-svg install them)");
  size_t links = 0;
  const std::vector<std::string> pngs = list_pngs(png_root, links);
  MOON_CHECK(!pngs.empty(), png_root, ": no PNG files found");

  std::vector<std::string> ids, folders;
  for (const std::string& rel : pngs) {
    const fs::path p(rel);
    ids.push_back("openclipart/" + (p.parent_path() / p.stem()).generic_string());
    folders.push_back(p.begin()->string());  // spread over the top-level folders
  }
  const std::vector<size_t> order = spread_order(ids, folders, options.seed);
  const size_t wanted = options.limit != 0 ? std::min(options.limit, pngs.size()) : pngs.size();

  ImportSummary summary;
  summary.source = "openclipart";
  if (links) summary.skipped["symbolic link to a PNG filed elsewhere (same art, second category)"] = links;
  std::vector<std::pair<size_t, Product>> kept;  // (index in pngs, product)
  int warnings = 0;
  // Counts a skipped PNG; the first few reasons are also shown in full.
  auto skip = [&](const std::string& kind, const std::string& detail) {
    ++summary.skipped[kind];
    if (options.progress && warnings++ < 3) std::fprintf(stderr, "moon data: skipping: %s\n", detail.c_str());
  };
  Progress progress("openclipart", wanted, options.progress);
  for (size_t k = 0; k < order.size() && kept.size() < wanted; ++k) {
    const size_t i = order[k];
    const fs::path rel(pngs[i]);
    const std::string png = png_root + "/" + pngs[i];
    const std::string svg = svg_root + "/" + (rel.parent_path() / rel.stem()).generic_string() + ".svg";
    if (!fs::exists(svg)) {
      skip("PNG without a matching SVG", png + ": no " + svg);
      continue;
    }
    int w = 0, h = 0, comp = 0;
    if (!stbi_info(png.c_str(), &w, &h, &comp)) {
      const std::string size = png_header_size(png);
      if (!size.empty()) skip("PNG larger than the decoder's 16384 px a side", png + ": " + size);
      else skip("PNG that stb_image cannot read", png + ": " + (stbi_failure_reason() ? stbi_failure_reason() : "unreadable"));
      continue;
    }
    SvgMetadata meta;
    try {
      meta = parse_svg_metadata(read_file_text(svg), svg);
    } catch (const Error& e) {
      skip("SVG metadata that does not parse", e.what());
      continue;
    }
    Product product;
    product.id = ids[i];
    product.title = meta.title.empty() ? title_from_stem(rel.stem().string()) : meta.title;
    product.images = {"images/" + pngs[i]};
    for (const auto& part : rel.parent_path()) product.category.push_back(part.string());
    if (!meta.keywords.empty()) product.attributes.emplace_back("keywords", join(meta.keywords, ", "));
    if (!meta.description.empty()) product.attributes.emplace_back("description", meta.description);
    product.split = assign_split(product.id, options.seed);
    make_dirs(options.out_dir + "/images/" + rel.parent_path().generic_string());
    link_or_copy(png, options.out_dir + "/" + product.images[0]);
    kept.emplace_back(i, std::move(product));
    progress.update(kept.size());
  }
  progress.finish(kept.size());
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Product> products;
  for (auto& [i, product] : kept) products.push_back(std::move(product));
  finish_import(options, products, start, summary);
  return summary;
}

}  // namespace moon::io
