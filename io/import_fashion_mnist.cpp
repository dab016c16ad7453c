// `moon data import fashion-mnist`: the 70,000 Zalando article photos (28x28 grey) of Debian's
// dataset-fashion-mnist become PNGs with titles, attributes and category paths derived from their ten
// classes. The t10k file is the test split; val is drawn from train by a hash of the id.
#include <stb/stb_image_write.h>

#include <algorithm>
#include <filesystem>

#include "io/dataset_split.h"
#include "io/file_util.h"
#include "io/idx.h"
#include "io/importer.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

const char* const kDefaultDir = "/usr/share/datasets/fashion-mnist";

struct FashionClass {
  const char* garment;  // the class as a noun phrase, also the search query
  const char* type;     // top | bottom | dress | outerwear | footwear | bag
  const char* group;    // second level of the category path
  std::vector<const char*> titles;  // title variations; one is chosen per product from its id
};

// The ten Fashion-MNIST classes, in label order.
const std::vector<FashionClass>& fashion_classes() {
  static const std::vector<FashionClass> classes = {
      {"t-shirt", "top", "tops", {"women's cotton t-shirt", "men's basic t-shirt", "classic crew-neck t-shirt",
                                  "short-sleeve t-shirt", "casual jersey t-shirt", "loose fit top"}},
      {"trousers", "bottom", "bottoms", {"slim-fit trousers", "women's straight trousers", "men's chinos",
                                         "wide-leg trousers", "classic pants", "high-waisted trousers"}},
      {"pullover", "top", "tops", {"knitted pullover", "women's wool jumper", "men's crew-neck sweater",
                                   "long-sleeve pullover", "cosy knit sweater", "classic pullover"}},
      {"dress", "dress", "dresses", {"summer dress", "women's midi dress", "sleeveless shift dress",
                                     "casual jersey dress", "classic a-line dress", "evening dress"}},
      {"coat", "outerwear", "outerwear", {"women's winter coat", "men's wool coat", "classic trench coat",
                                          "padded jacket", "long parka", "zip-up coat"}},
      {"sandal", "footwear", "footwear", {"strappy sandal", "women's summer sandal", "flat sandal",
                                          "heeled sandal", "men's leather sandal", "casual slide sandal"}},
      {"shirt", "top", "tops", {"men's button-down shirt", "women's blouse", "classic oxford shirt",
                                "long-sleeve shirt", "casual check shirt", "slim-fit shirt"}},
      {"sneaker", "footwear", "footwear", {"low-top sneaker", "men's running shoe", "women's canvas sneaker",
                                           "classic trainer", "lace-up sneaker", "sports shoe"}},
      {"bag", "bag", "bags", {"leather handbag", "women's shoulder bag", "tote bag", "small clutch bag",
                                "canvas shopper bag", "classic satchel"}},
      {"ankle boot", "footwear", "footwear", {"classic ankle boot", "women's heeled ankle boot",
                                              "men's chelsea boot", "lace-up ankle boot", "suede ankle boot",
                                              "block-heel ankle boot"}},
  };
  return classes;
}

// The IDX file `stem` in `folder`, gzip'd or not.
std::string find_idx(const std::string& folder, const std::string& stem) {
  for (const std::string& name : {stem + ".gz", stem})
    if (std::filesystem::exists(folder + "/" + name)) return folder + "/" + name;
  fail(folder, ": neither ", stem, ".gz nor ", stem,
       " found; install Debian's dataset-fashion-mnist or pass --source-dir with the four IDX files");
}

// One half of the data set (train or t10k): images (N, 28, 28) u8 and labels (N) u8 in 0..9.
struct FashionPart {
  std::string name;  // "train" or "test"
  IdxArray images, labels;
};

FashionPart read_part(const std::string& folder, const std::string& prefix, const std::string& name) {
  FashionPart part{name, read_idx(find_idx(folder, prefix + "-images-idx3-ubyte")),
                   read_idx(find_idx(folder, prefix + "-labels-idx1-ubyte"))};
  const std::string images = folder + "/" + prefix + "-images-idx3-ubyte";
  MOON_CHECK(part.images.type == IdxType::U8 && part.images.dims.size() == 3, images,
             ": expected u8 images of shape (N, H, W), got ", part.images.dims.size(), " dims of ",
             idx_type_name(part.images.type));
  MOON_CHECK(part.labels.type == IdxType::U8 && part.labels.dims.size() == 1 &&
                 part.labels.dims[0] == part.images.dims[0],
             folder, "/", prefix, "-labels-idx1-ubyte: expected ", part.images.dims[0], " u8 labels");
  for (size_t i = 0; i < part.labels.data.size(); ++i)
    MOON_CHECK(part.labels.data[i] < 10, folder, "/", prefix, "-labels-idx1-ubyte: label ", int(part.labels.data[i]),
               " of item ", i, " is not a Fashion-MNIST class (0..9)");
  return part;
}

std::string padded(size_t i) {
  std::string s = std::to_string(i);
  return std::string(s.size() < 5 ? 5 - s.size() : 0, '0') + s;
}

// Encodes a (H, W) u8 grey image as PNG bytes.
std::vector<uint8_t> encode_png_grey(const uint8_t* pixels, int width, int height) {
  std::vector<uint8_t> png;
  auto sink = [](void* ctx, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(ctx);
    out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  MOON_CHECK(stbi_write_png_to_func(sink, &png, width, height, 1, pixels, width) != 0, "PNG encoding failed");
  return png;
}

}  // namespace

ImportSummary import_fashion_mnist(const ImportOptions& options) {
  const double start = now_seconds();
  std::string folder = options.source_dir;
  if (folder.empty()) {
    folder = kDefaultDir;
    ensure_apt_package("dataset-fashion-mnist", folder + "/train-images-idx3-ubyte.gz", options.install);
  }
  const std::vector<FashionPart> parts = {read_part(folder, "train", "train"), read_part(folder, "t10k", "test")};

  // Every item as (part, index), its id and class, in file order: train first, then test.
  std::vector<std::pair<size_t, size_t>> items;
  std::vector<std::string> ids, classes;
  for (size_t p = 0; p < parts.size(); ++p)
    for (size_t i = 0; i < parts[p].labels.data.size(); ++i) {
      items.emplace_back(p, i);
      ids.push_back("fmnist-" + parts[p].name + "-" + padded(i));
      classes.push_back(fashion_classes()[parts[p].labels.data[i]].garment);
    }
  std::vector<size_t> chosen = spread_order(ids, classes, options.seed);
  if (options.limit != 0 && options.limit < chosen.size()) chosen.resize(options.limit);
  std::sort(chosen.begin(), chosen.end());

  const double val_fraction = 1.0 / 9.0;  // 80/10/10 overall: val is a ninth of what is not test
  for (const FashionPart& part : parts) make_dirs(options.out_dir + "/images/" + part.name);
  std::vector<Product> products;
  products.reserve(chosen.size());
  Progress progress("fashion-mnist", chosen.size(), options.progress);
  for (size_t k = 0; k < chosen.size(); ++k) {
    const auto [p, i] = items[chosen[k]];
    const FashionPart& part = parts[p];
    const FashionClass& cls = fashion_classes()[part.labels.data[i]];
    const int height = static_cast<int>(part.images.dims[1]), width = static_cast<int>(part.images.dims[2]);
    const uint8_t* pixels = part.images.data.data() + i * size_t(height) * size_t(width);  // (H, W) u8
    Product product;
    product.id = ids[chosen[k]];
    product.title = cls.titles[stable_hash(product.id, 0xfa5) % cls.titles.size()];
    product.images = {"images/" + part.name + "/" + padded(i) + ".png"};
    product.category = {"fashion", cls.group, cls.garment};
    product.attributes = {{"garment", cls.garment}, {"type", cls.type}, {"colour", "greyscale"}};
    product.queries = {cls.garment};
    product.split = part.name == "test" ? "test" : assign_train_val(product.id, options.seed, val_fraction);
    write_bytes(options.out_dir + "/" + product.images[0], encode_png_grey(pixels, width, height));
    products.push_back(std::move(product));
    progress.update(k + 1);
  }
  progress.finish(products.size());
  ImportSummary summary;
  summary.source = "fashion-mnist";
  finish_import(options, products, start, summary);
  return summary;
}

}  // namespace moon::io
