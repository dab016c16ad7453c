// Suite `importers`: runs the three real importers (Fashion-MNIST, OpenClipart, Noto emoji) with small
// --limit values, loads each manifest with BadRecords::Stop and image checks, decodes every image's PNG
// header, checks counts and splits, and that a re-run writes the same bytes. Also imports small hand-made
// sources through --source-dir to check pixels, skips and error messages exactly.
// Needs the data packages (scripts/setup.sh) and npm with network for the emoji package.
#include <doctest/doctest.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/file_util.h"
#include "io/idx.h"
#include "io/importer.h"
#include "io/manifest_reader.h"
#include "tests/test_util.h"

using moon::test::contains;
using moon::test::error_of;
namespace io = moon::io;
namespace fs = std::filesystem;

namespace {

// The folder the imports go to: $MOON_IMPORT_TEST_DIR (set by ctest to a folder in the build tree), or a
// folder under the system's temporary folder.
std::string test_root(const std::string& name) {
  const char* env = std::getenv("MOON_IMPORT_TEST_DIR");
  const std::string root = env && *env ? std::string(env) : (fs::temp_directory_path() / "moon-importers").string();
  const std::string dir = root + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string file_bytes(const std::string& path) { return io::read_file_text(path); }

// Imports `source` twice into the same folder and checks the manifest and every image. Returns the manifest.
io::Manifest import_and_check(const std::string& source, size_t limit, int width, int height,
                              const std::string& source_dir = "") {
  io::ImportOptions options;
  options.out_dir = test_root(source);
  options.limit = limit;
  options.seed = 0;
  options.progress = false;
  options.source_dir = source_dir;
  io::ImportSummary summary;
  try {
    summary = io::import_source(source, options);
  } catch (const moon::Error& e) {
    FAIL("importing ", source, " failed: ", e.what());
  }
  CHECK(summary.products == limit);
  CHECK(summary.images == limit);
  io::LoadOptions check;
  check.check_images = true;
  const io::Manifest m = io::load_manifest(summary.manifest_path, io::BadRecords::Stop, check);
  CHECK(m.products.size() == limit);
  CHECK(m.issues.empty());
  std::set<std::string> ids;
  for (const io::Product& p : m.products) {
    ids.insert(p.id);
    CHECK(io::is_known_split(p.split));
    CHECK(!p.title.empty());
    CHECK(!p.category.empty());
    REQUIRE(p.images.size() == 1);
    int w = 0, h = 0, comp = 0;
    const std::string image = io::image_path(m, p, 0);
    const std::string head = file_bytes(image).substr(0, 8);
    CHECK(head == "\x89PNG\r\n\x1a\n");
    CHECK(stbi_info(image.c_str(), &w, &h, &comp) == 1);
    if (width > 0) {
      CHECK(w == width);
      CHECK(h == height);
    } else {
      CHECK(w > 0);
      CHECK(h > 0);
    }
  }
  CHECK(ids.size() == limit);
  // A re-run into the same folder is byte-identical: the manifest and every image.
  const std::string first = file_bytes(summary.manifest_path);
  std::vector<std::string> images;
  for (const io::Product& p : m.products) images.push_back(file_bytes(io::image_path(m, p, 0)));
  const io::ImportSummary again = io::import_source(source, options);
  CHECK(file_bytes(again.manifest_path) == first);
  for (size_t i = 0; i < m.products.size(); ++i) CHECK(file_bytes(io::image_path(m, m.products[i], 0)) == images[i]);
  return m;
}

std::map<std::string, size_t> count_by(const io::Manifest& m, size_t level) {
  std::map<std::string, size_t> counts;
  for (const io::Product& p : m.products) ++counts[level < p.category.size() ? p.category[level] : p.split];
  return counts;
}

void write_png(const std::string& path, int w, int h) {
  std::vector<uint8_t> pixels(size_t(w) * h * 3, 128);  // (H, W, 3) u8
  REQUIRE(stbi_write_png(path.c_str(), w, h, 3, pixels.data(), w * 3) != 0);
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST_SUITE("importers") {
  TEST_CASE("fashion-mnist: 300 products spread over the ten classes, t10k as test, val drawn from train") {
    const io::Manifest m = import_and_check("fashion-mnist", 300, 28, 28);
    const auto per_class = count_by(m, 2);
    CHECK(per_class.size() == 10);
    for (const auto& [garment, n] : per_class) CHECK(n == 30);
    const auto per_split = count_by(m, 99);
    CHECK(per_split.at("train") > 150);
    CHECK(per_split.at("val") > 10);
    CHECK(per_split.at("test") > 20);
    for (const io::Product& p : m.products) {
      CHECK((p.split == "test") == contains(p.id, "-test-"));
      CHECK(p.category[0] == "fashion");
      CHECK(p.queries == std::vector<std::string>{p.category[2]});
      REQUIRE(p.attributes.size() == 3);
      CHECK(p.attributes[0].second == p.category[2]);
      CHECK(p.attributes[2] == std::pair<std::string, std::string>{"colour", "greyscale"});
    }
  }

  TEST_CASE("openclipart: titles and keywords from the SVG metadata, folders as categories") {
    const io::Manifest m = import_and_check("openclipart", 60, 0, 0);
    CHECK(count_by(m, 0).size() >= 15);
    size_t with_keywords = 0;
    for (const io::Product& p : m.products) {
      CHECK(p.id.rfind("openclipart/" + p.category[0] + "/", 0) == 0);
      for (const auto& [key, value] : p.attributes) {
        CHECK((key == "keywords" || key == "description"));
        CHECK(!value.empty());
        with_keywords += key == "keywords";
      }
    }
    CHECK(with_keywords > 30);
  }

  TEST_CASE("emoji: the pinned npm package (installed when missing), 64x64 Noto images") {
    const bool npm = std::system("command -v npm >/dev/null 2>&1") == 0;
    const std::string cached = io::moon_cache_dir() + "/npm/node_modules/emoji-datasource-google/emoji.json";
    if (!npm && !fs::exists(cached))
      FAIL("npm is not installed, so the emoji package cannot be fetched: install npm (bash scripts/setup.sh)");
    const io::Manifest m = import_and_check("emoji", 50, 64, 64);
    CHECK(count_by(m, 0).size() == 10);
    for (const io::Product& p : m.products) {
      CHECK(p.id.rfind("emoji/", 0) == 0);
      REQUIRE(p.attributes.size() >= 2);
      CHECK(p.attributes[0] == std::pair<std::string, std::string>{"category", p.category[0]});
      CHECK(p.attributes[1] == std::pair<std::string, std::string>{"subcategory", p.category[1]});
    }
  }

  TEST_CASE("fashion-mnist from --source-dir: pixels survive the PNG round trip; missing files are named") {
    const std::string src = test_root("fmnist-src");
    // train: 6 images (6, 2, 3) u8 with labels 0..5; t10k: 2 images with labels 9, 8.
    auto write_part = [&](const std::string& prefix, std::vector<uint8_t> labels) {
      io::IdxArray images{io::IdxType::U8, {uint32_t(labels.size()), 2, 3}, {}};
      for (size_t i = 0; i < labels.size() * 6; ++i) images.data.push_back(static_cast<uint8_t>(i * 7));
      const std::vector<uint8_t> bytes = io::encode_idx(images);
      io::write_bytes(src + "/" + prefix + "-images-idx3-ubyte", bytes);
      io::IdxArray label_array{io::IdxType::U8, {uint32_t(labels.size())}, labels};
      io::write_bytes(src + "/" + prefix + "-labels-idx1-ubyte", io::encode_idx(label_array));
    };
    write_part("train", {0, 1, 2, 3, 4, 5});
    write_part("t10k", {9, 8});
    const io::Manifest m = import_and_check("fashion-mnist", 8, 3, 2, src);
    CHECK(count_by(m, 99).at("test") == 2);
    for (const io::Product& p : m.products) {
      int w = 0, h = 0, c = 0;
      uint8_t* pixels = stbi_load(io::image_path(m, p, 0).c_str(), &w, &h, &c, 1);
      REQUIRE(pixels != nullptr);
      const size_t index = std::stoul(p.id.substr(p.id.size() - 5));
      for (size_t k = 0; k < 6; ++k) CHECK(pixels[k] == static_cast<uint8_t>((index * 6 + k) * 7));
      stbi_image_free(pixels);
    }
    fs::remove(src + "/t10k-labels-idx1-ubyte");
    io::ImportOptions options;
    options.out_dir = test_root("fmnist-missing");
    options.source_dir = src;
    options.progress = false;
    CHECK(error_of([&] { io::import_fashion_mnist(options); }) ==
          src + ": neither t10k-labels-idx1-ubyte.gz nor t10k-labels-idx1-ubyte found; install Debian's "
                "dataset-fashion-mnist or pass --source-dir with the four IDX files");
  }

  TEST_CASE("openclipart from --source-dir: PNGs without an SVG or with broken metadata are skipped and counted") {
    const std::string src = test_root("clipart-src");
    fs::create_directories(src + "/png/food/fruit");
    fs::create_directories(src + "/svg/food/fruit");
    write_png(src + "/png/food/fruit/apple.png", 5, 4);
    write_text(src + "/svg/food/fruit/apple.svg",
               "<svg><metadata><rdf:RDF><cc:Work><dc:title>Red &amp; green apple</dc:title><dc:subject><rdf:Bag>"
               "<rdf:li>fruit</rdf:li><rdf:li>apple</rdf:li></rdf:Bag></dc:subject></cc:Work></rdf:RDF></metadata></svg>");
    write_png(src + "/png/food/pear_01.png", 3, 3);
    write_text(src + "/svg/food/pear_01.svg", "<svg><rect/></svg>");  // no metadata: title from the name
    write_png(src + "/png/food/lost.png", 2, 2);                        // no SVG
    write_png(src + "/png/food/broken.png", 2, 2);
    write_text(src + "/svg/food/broken.svg", "<svg><metadata><dc:title>x</dc:subject></metadata></svg>");
    io::ImportOptions options;
    options.out_dir = test_root("clipart-out");
    options.source_dir = src;
    options.progress = false;
    const io::ImportSummary s = io::import_openclipart(options);
    CHECK(s.products == 2);
    CHECK(s.skipped.at("PNG without a matching SVG") == 1);
    CHECK(s.skipped.at("SVG metadata that does not parse") == 1);
    const io::Manifest m = io::load_manifest(s.manifest_path, io::BadRecords::Stop);
    REQUIRE(m.products.size() == 2);
    CHECK(m.products[0].id == "openclipart/food/fruit/apple");
    CHECK(m.products[0].title == "Red & green apple");
    CHECK(m.products[0].category == std::vector<std::string>{"food", "fruit"});
    CHECK(m.products[0].attributes == std::vector<std::pair<std::string, std::string>>{{"keywords", "fruit, apple"}});
    CHECK(m.products[1].title == "pear 01");
    CHECK(m.products[1].attributes.empty());
    CHECK(contains(io::format_summary(s), "skipped 1: PNG without a matching SVG"));
  }

  TEST_CASE("an unknown source and a missing --out are errors that say what to do") {
    io::ImportOptions options;
    options.out_dir = test_root("unknown");
    CHECK(error_of([&] { io::import_source("mnist", options); }) ==
          "moon data import: unknown source 'mnist' (expected fashion-mnist, openclipart or emoji)");
    options.out_dir = "";
    CHECK(error_of([&] { io::import_source("emoji", options); }) == "moon data import: --out DIR is required");
  }
}
