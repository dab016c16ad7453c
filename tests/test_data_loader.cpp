// The data loader: batch contents, determinism across worker counts, epoch shuffles, resume from a saved
// state, bad images (stop vs skip). Builds a small real manifest of PNGs in a temporary folder.
#include <doctest/doctest.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "io/bpe_trainer.h"
#include "io/data_loader.h"
#include "io/epoch_order.h"
#include "io/file_util.h"
#include "io/manifest.h"
#include "tests/test_util.h"

using namespace moon;
using namespace moon::io;
using moon::test::contains;
using moon::test::error_of;

namespace {

// A folder with `n` products: product i has a 20x12 PNG whose pixels encode i (every third has no image,
// so text-only products are covered), a title, attributes and one of three categories.
struct Fixture {
  std::string dir;
  std::shared_ptr<const Manifest> manifest;
  std::shared_ptr<const BpeTokenizer> tokenizer;

  explicit Fixture(int n, const std::string& name) {
    dir = (std::filesystem::temp_directory_path() / ("moon_loader_" + name)).string();
    std::filesystem::remove_all(dir);
    make_dirs(dir + "/images");
    std::vector<Product> products;
    std::vector<std::string> texts;
    const char* kinds[] = {"shirt", "boot", "bag"};
    for (int i = 0; i < n; ++i) {
      Product p;
      p.id = "p" + std::to_string(i);
      p.title = "product number ";
      p.title.append(std::to_string(i)).append(" a ").append(kinds[i % 3]);
      p.category = {"shop", kinds[i % 3]};
      p.attributes = {{"colour", i % 2 ? "red" : "blue"}};
      if (i % 3 != 2) {
        std::vector<uint8_t> rgb(20 * 12 * 3);
        for (size_t k = 0; k < rgb.size(); ++k) rgb[k] = static_cast<uint8_t>((i * 7 + k % 3 * 50) % 256);
        p.images = {"images/" + p.id + ".png"};
        REQUIRE(stbi_write_png((dir + "/" + p.images[0]).c_str(), 20, 12, 3, rgb.data(), 60) != 0);
      }
      texts.push_back(p.title);
      products.push_back(p);
    }
    write_manifest(dir + "/manifest.jsonl", products);
    manifest = std::make_shared<const Manifest>(load_manifest(dir + "/manifest.jsonl", BadRecords::Stop));
    tokenizer = std::make_shared<const BpeTokenizer>(train_bpe(texts, 300, PreTokenizer::Gpt2));
  }
  ~Fixture() { std::filesystem::remove_all(dir); }
};

LoaderOptions small_options(int workers) {
  LoaderOptions o;
  o.batch_size = 4;
  o.image.size = 8;
  o.workers = workers;
  o.seed = 17;
  return o;
}

bool equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  return a.to_vector<double>() == b.to_vector<double>();
}

bool equal(const Batch& a, const Batch& b) {
  return equal(a.images, b.images) && equal(a.token_ids, b.token_ids) && equal(a.attention_mask, b.attention_mask) &&
         equal(a.labels, b.labels) && equal(a.product_index, b.product_index) && equal(a.has_image, b.has_image) &&
         a.epoch == b.epoch && a.batch_in_epoch == b.batch_in_epoch;
}

}  // namespace

TEST_SUITE("data_loader") {
  TEST_CASE("epoch_order is a seeded permutation, different per epoch") {
    const auto a = epoch_order(5, 0, 1000, true), b = epoch_order(5, 1, 1000, true);
    CHECK(a == epoch_order(5, 0, 1000, true));
    CHECK(a != b);
    CHECK(a != epoch_order(6, 0, 1000, true));
    auto sorted = a;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 1000; ++i) CHECK(sorted[static_cast<size_t>(i)] == i);
    CHECK(epoch_order(5, 0, 4, false) == std::vector<int64_t>{0, 1, 2, 3});
  }

  TEST_CASE("a batch holds the products' pixels, tokens, masks and labels") {
    Fixture f(10, "contents");
    LoaderOptions o = small_options(0);
    o.shuffle = false;
    o.image.norm = Normalization::None;
    DataLoader loader(f.manifest, f.tokenizer, o);
    CHECK(loader.batches_per_epoch() == 2);  // 10 / 4, trailing partial batch dropped
    CHECK(loader.categories() == std::vector<std::string>{"shop/bag", "shop/boot", "shop/shirt"});
    const Batch b = loader.next();
    CHECK(b.images.shape() == Shape{4, 3, 8, 8});
    CHECK(b.product_index.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3});
    CHECK(b.has_image.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 0, 1});
    CHECK(b.labels.to_vector<int64_t>() == std::vector<int64_t>{2, 1, 0, 2});  // shirt, boot, bag, shirt
    // Product 1's image is constant per channel: (7 + c*50) / 255 after a resize that keeps constants.
    const std::vector<float> px = b.images.to_vector<float>();
    for (int c = 0; c < 3; ++c) CHECK(px[(1 * 3 + c) * 64 + 10] == doctest::Approx((7 + c * 50) / 255.0).epsilon(1e-6));
    for (int k = 0; k < 3 * 64; ++k) REQUIRE(px[2 * 3 * 64 + k] == 0.0f);  // text-only product: zeros
    // Tokens: each row is the encoding of its product's text, then <pad> with mask 0.
    const int64_t t = b.token_ids.size(1);
    const auto ids = b.token_ids.to_vector<int64_t>();
    const auto mask = b.attention_mask.to_vector<int64_t>();
    int64_t longest = 0;
    for (int r = 0; r < 4; ++r) {
      const auto expect = f.tokenizer->encode(product_text(f.manifest->products[static_cast<size_t>(r)]));
      longest = std::max<int64_t>(longest, static_cast<int64_t>(expect.size()));
      for (int64_t k = 0; k < t; ++k) {
        const bool real = k < static_cast<int64_t>(expect.size());
        CHECK(mask[static_cast<size_t>(r * t + k)] == (real ? 1 : 0));
        CHECK(ids[static_cast<size_t>(r * t + k)] == (real ? expect[static_cast<size_t>(k)] : f.tokenizer->special_id("<pad>")));
      }
    }
    CHECK(t == longest);
  }

  TEST_CASE("max_tokens cuts long texts; pad_to_longest off gives a fixed width") {
    Fixture f(8, "tokens");
    LoaderOptions o = small_options(0);
    o.max_tokens = 3;
    o.pad_to_longest = false;
    DataLoader loader(f.manifest, f.tokenizer, o);
    const Batch b = loader.next();
    CHECK(b.token_ids.shape() == Shape{4, 3});
    for (int64_t m : b.attention_mask.to_vector<int64_t>()) CHECK(m == 1);
  }

  TEST_CASE("batches do not depend on the number of workers; epochs reshuffle and cover every product") {
    Fixture f(13, "workers");
    DataLoader serial(f.manifest, f.tokenizer, small_options(0));
    DataLoader threaded(f.manifest, f.tokenizer, small_options(2));
    std::vector<std::set<int64_t>> seen(2);
    std::vector<std::vector<int64_t>> order(2);
    for (int step = 0; step < 6; ++step) {  // 3 batches per epoch, two epochs
      const Batch a = serial.next(), b = threaded.next();
      CHECK(equal(a, b));
      CHECK(a.epoch == step / 3);
      for (int64_t i : a.product_index.to_vector<int64_t>()) {
        seen[static_cast<size_t>(a.epoch)].insert(i);
        order[static_cast<size_t>(a.epoch)].push_back(i);
      }
    }
    CHECK(seen[0].size() == 12);  // 13 products, 3 batches of 4: one product sits out each epoch
    CHECK(seen[1].size() == 12);
    CHECK(order[0] != order[1]);
    CHECK(threaded.stats().batches == 6);
    CHECK(threaded.stats().products == 24);
  }

  TEST_CASE("augmentation is replayable: the same seed gives the same pixels on any thread") {
    Fixture f(8, "augment");
    LoaderOptions o = small_options(2);
    o.augment = true;
    o.augmentation.brightness = 0.4f;
    DataLoader a(f.manifest, f.tokenizer, o), b(f.manifest, f.tokenizer, o);
    for (int i = 0; i < 3; ++i) CHECK(equal(a.next(), b.next()));
    o.seed = 18;
    DataLoader c(f.manifest, f.tokenizer, o);
    DataLoader d(f.manifest, f.tokenizer, small_options(2));
    CHECK_FALSE(equal(c.next().images, d.next().images));
  }

  TEST_CASE("views = 2 adds an independently augmented second view, replayable, equal without augmentation") {
    Fixture f(8, "views");
    LoaderOptions o = small_options(0);
    o.views = 2;
    const Batch plain = DataLoader(f.manifest, f.tokenizer, o).next();
    CHECK(equal(plain.images, plain.images2));
    CHECK_FALSE(DataLoader(f.manifest, f.tokenizer, small_options(0)).next().images2.defined());
    o.augment = true;
    o.augmentation.brightness = 0.4f;
    const Batch a = DataLoader(f.manifest, f.tokenizer, o).next();
    o.workers = 2;
    const Batch b = DataLoader(f.manifest, f.tokenizer, o).next();
    CHECK(equal(a, b));
    CHECK(equal(a.images2, b.images2));
    CHECK_FALSE(equal(a.images, a.images2));
    o.views = 1;
    CHECK(equal(DataLoader(f.manifest, f.tokenizer, o).next().images, a.images));  // view 1 is unchanged
    o.views = 3;
    CHECK(contains(error_of([&] { DataLoader(f.manifest, f.tokenizer, o); }), "views must be 1 or 2, got 3"));
  }

  TEST_CASE("a loader restored from a saved state continues exactly where the first stopped") {
    Fixture f(11, "resume");
    DataLoader first(f.manifest, f.tokenizer, small_options(2));
    for (int i = 0; i < 3; ++i) first.next();  // into the second epoch (2 batches per epoch)
    const std::string saved = first.state().to_json();
    std::vector<Batch> expected;
    for (int i = 0; i < 4; ++i) expected.push_back(first.next());

    DataLoader resumed(f.manifest, f.tokenizer, small_options(1));
    resumed.next();  // some unrelated progress (and prefetching) that restore must discard
    resumed.restore(LoaderState::from_json(saved));
    CHECK(resumed.state().epoch == 1);
    CHECK(resumed.state().batch_in_epoch == 1);
    for (const Batch& e : expected) CHECK(equal(resumed.next(), e));
  }

  TEST_CASE("bad states and options are clear errors") {
    Fixture f(6, "errors");
    DataLoader loader(f.manifest, f.tokenizer, small_options(0));
    CHECK(contains(error_of([&] { LoaderState::from_json("{\"seed\": 17}"); }), "field 'epoch'"));
    CHECK(contains(error_of([&] { LoaderState::from_json("not json"); }), "not valid JSON"));
    CHECK(contains(error_of([&] { loader.restore(LoaderState{18, 0, 0}); }), "seed 18"));
    CHECK(contains(error_of([&] { loader.restore(LoaderState{17, 0, 5}); }), "outside"));
    LoaderOptions big = small_options(0);
    big.batch_size = 100;
    CHECK(contains(error_of([&] { DataLoader(f.manifest, f.tokenizer, big); }), "fewer than one batch of 100"));
  }

  TEST_CASE("a corrupt image stops the loader naming the manifest line, or is skipped and counted") {
    Fixture f(8, "badimage");
    // Product 1 (line 2) gets a truncated PNG.
    const std::string png = image_path(*f.manifest, f.manifest->products[1], 0);
    const std::vector<uint8_t> bytes = read_file_bytes(png);
    write_file_atomic(png, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size() / 2));
    LoaderOptions o = small_options(2);
    o.shuffle = false;
    DataLoader stop(f.manifest, f.tokenizer, o);
    const std::string err = error_of([&] { stop.next(); });
    CHECK(contains(err, "manifest.jsonl:2: product 'p1'"));
    CHECK(contains(err, "p1.png"));

    o.bad_images = BadRecords::Skip;
    DataLoader skip(f.manifest, f.tokenizer, o);
    const Batch b = skip.next();
    CHECK(b.has_image.to_vector<int64_t>() == std::vector<int64_t>{1, 0, 0, 1});
    CHECK(skip.stats().bad_images == 1);
    CHECK(contains(skip.stats().first_bad_image, "p1.png"));
  }
}

TEST_SUITE("data_loader") {
  TEST_CASE("with augmentation a product's images take turns across epochs; without, the first is used") {
    Fixture f(4, "multi");
    // Give product 0 a second, all-white image next to its first.
    std::vector<Product> products = f.manifest->products;
    std::vector<uint8_t> white(20 * 12 * 3, 255);
    REQUIRE(stbi_write_png((f.dir + "/images/white.png").c_str(), 20, 12, 3, white.data(), 60) != 0);
    products[0].images.push_back("images/white.png");
    write_manifest(f.dir + "/manifest.jsonl", products);
    auto manifest = std::make_shared<const Manifest>(load_manifest(f.dir + "/manifest.jsonl", BadRecords::Stop));

    LoaderOptions o = small_options(0);
    o.shuffle = false;
    o.image.norm = Normalization::None;
    auto first_pixel_of_product0 = [&](DataLoader& loader) {
      const Batch b = loader.next();  // one batch per epoch (4 products, batch 4)
      return b.images.to_vector<float>()[0];
    };
    DataLoader plain(manifest, f.tokenizer, o);
    for (int e = 0; e < 6; ++e) CHECK(first_pixel_of_product0(plain) != 1.0f);  // never the white image

    o.augment = true;
    o.augmentation.flip_probability = 0;
    o.augmentation.random_resized_crop = false;
    DataLoader augmented(manifest, f.tokenizer, o);
    int white_epochs = 0;
    for (int e = 0; e < 16; ++e) white_epochs += first_pixel_of_product0(augmented) == 1.0f;
    CHECK(white_epochs > 0);
    CHECK(white_epochs < 16);
  }
}
