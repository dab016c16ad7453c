// Manifests, splits, IDX files and SVG metadata: suite `manifest` checks each field, each error message and
// the skip/stop policies; suite `fuzz_manifest` feeds thousands of seeded mutations of manifest lines, IDX
// files and SVG metadata to the parsers, which must parse them or throw moon::Error.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <fstream>
#include <random>

#include "io/dataset_split.h"
#include "io/file_util.h"
#include "io/idx.h"
#include "io/manifest.h"
#include "io/manifest_reader.h"
#include "io/svg_metadata.h"
#include "tests/test_util.h"

using moon::test::contains;
using moon::test::error_of;
using moon::test::TempDir;
namespace io = moon::io;
namespace fs = std::filesystem;

namespace {


void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

// gzip'd copy of `bytes` (zlib's deflate with a gzip header).
std::vector<uint8_t> gzip(const std::vector<uint8_t>& bytes) {
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, bytes.size()) + 64);
  zs.next_in = const_cast<Bytef*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string parse_error(const std::string& line) {
  return error_of([&] { io::parse_product(line, "shop.jsonl", 7); });
}

const char* const kFullLine =
    R"({"id":"p1","title":"Red leather sneaker","images":["img/p1.jpg","img/p1b.jpg"],)"
    R"("category":["apparel","footwear","sneaker"],"attributes":{"colour":"red","size":42,"vegan":false,"weight":0.5},)"
    R"("queries":["red sneaker","leather shoes"],"split":"val"})";

}  // namespace

TEST_SUITE("manifest") {
  TEST_CASE("a full line parses into every field, attributes in the file's order") {
    const io::Product p = io::parse_product(kFullLine, "shop.jsonl", 3);
    CHECK(p.id == "p1");
    CHECK(p.title == "Red leather sneaker");
    CHECK(p.images == std::vector<std::string>{"img/p1.jpg", "img/p1b.jpg"});
    CHECK(p.category == std::vector<std::string>{"apparel", "footwear", "sneaker"});
    REQUIRE(p.attributes.size() == 4);
    CHECK(p.attributes[0] == std::pair<std::string, std::string>{"colour", "red"});
    CHECK(p.attributes[1] == std::pair<std::string, std::string>{"size", "42"});
    CHECK(p.attributes[2] == std::pair<std::string, std::string>{"vegan", "false"});
    CHECK(p.attributes[3] == std::pair<std::string, std::string>{"weight", "0.5"});
    CHECK(p.queries == std::vector<std::string>{"red sneaker", "leather shoes"});
    CHECK(p.split == "val");
    CHECK(p.line == 3);
  }

  TEST_CASE("optional fields, a category string and text-only or image-only products") {
    io::Product p = io::parse_product(R"({"id":"t","title":"Plain mug","category":"home/kitchen//mugs/"})", "f", 1);
    CHECK(p.images.empty());
    CHECK(p.category == std::vector<std::string>{"home", "kitchen", "mugs"});
    CHECK(p.attributes.empty());
    CHECK(p.queries.empty());
    CHECK(p.split.empty());
    p = io::parse_product(R"({"id":"i","images":["a.png"]})", "f", 1);
    CHECK(p.title.empty());
    p = io::parse_product(R"({"id":"i","title":"","images":["a.png"],"unknown_field":[1,2]})", "f", 1);
    CHECK(p.images.size() == 1);
  }

  TEST_CASE("every error names the file and the line and says what is wrong") {
    CHECK(parse_error(R"({"title":"x"})") == "shop.jsonl:7: missing field 'id'");
    CHECK(parse_error(R"({"id":5,"title":"x"})") == "shop.jsonl:7: field 'id' must be a string, found number");
    CHECK(parse_error(R"({"id":"","title":"x"})") == "shop.jsonl:7: field 'id' is empty");
    CHECK(parse_error(R"({"id":"a","title":12})") == "shop.jsonl:7: field 'title' must be a string, found number");
    CHECK(contains(parse_error(R"({"id":"a"})"), "shop.jsonl:7: missing field 'title'"));
    CHECK(parse_error(R"({"id":"a","title":""})") == "shop.jsonl:7: field 'title' is empty and there are no images");
    CHECK(parse_error(R"({"id":"a","title":"x","images":"a.png"})") ==
          "shop.jsonl:7: field 'images' must be an array of strings, found string");
    CHECK(parse_error(R"({"id":"a","title":"x","images":["a.png",3]})") ==
          "shop.jsonl:7: field 'images[1]' must be a string, found number");
    CHECK(parse_error(R"({"id":"a","title":"x","attributes":{"size":[1]}})") ==
          "shop.jsonl:7: field 'attributes.size' must be a string, number or boolean, found array");
    CHECK(parse_error(R"({"id":"a","title":"x","attributes":{"size":null}})") ==
          "shop.jsonl:7: field 'attributes.size' must be a string, number or boolean, found null");
    CHECK(parse_error(R"({"id":"a","title":"x","attributes":["size"]})") ==
          "shop.jsonl:7: field 'attributes' must be an object of string values, found array");
    CHECK(parse_error(R"({"id":"a","title":"x","category":7})") ==
          "shop.jsonl:7: field 'category' must be an array of strings or a string \"a/b/c\", found number");
    CHECK(parse_error(R"({"id":"a","title":"x","queries":[true]})") ==
          "shop.jsonl:7: field 'queries[0]' must be a string, found boolean");
    CHECK(parse_error(R"({"id":"a","title":"x","split":"dev"})") ==
          "shop.jsonl:7: unknown split 'dev' (expected train, val or test)");
    CHECK(parse_error(R"({"id":"a","title":"x","images":["/etc/passwd"]})") ==
          "shop.jsonl:7: image 0 ('/etc/passwd') is an absolute path; paths are relative to the manifest's folder");
    CHECK(parse_error(R"({"id":"a","title":"x","images":["ok.png","img/../../x.png"]})") ==
          "shop.jsonl:7: image 1 ('img/../../x.png') leaves the manifest's folder with '..'");
    CHECK(parse_error(R"({"id":"a","title":"x","images":["..\\x.png"]})") ==
          "shop.jsonl:7: image 0 ('..\\x.png') leaves the manifest's folder with '..'");
    CHECK(parse_error(R"(["id","a"])") == "shop.jsonl:7: a line must be a JSON object, found array");
    const std::string bad_json = parse_error(R"({"id":"a","title":tru})");
    CHECK(contains(bad_json, "shop.jsonl:7: invalid JSON at column 22: syntax error while parsing value - invalid literal"));
    CHECK(contains(parse_error(R"({"id":"a")"), "shop.jsonl:7: invalid JSON at column 10: syntax error while parsing object - unexpected end of input"));
    CHECK(parse_error(std::string(40, '[') + std::string(40, ']')) ==
          "shop.jsonl:7: invalid JSON: nested deeper than 32 levels");
    // '..' inside a name is not a parent folder.
    CHECK(io::parse_product(R"({"id":"a","images":["x..y.png","..a/b.png"]})", "f", 1).images.size() == 2);
  }

  TEST_CASE("to_json_line round-trips through parse_product") {
    const io::Product p = io::parse_product(kFullLine, "f", 1);
    const std::string line = io::to_json_line(p);
    CHECK(line.find('\n') == std::string::npos);
    const io::Product q = io::parse_product(line, "f", 1);
    CHECK(q.id == p.id);
    CHECK(q.title == p.title);
    CHECK(q.images == p.images);
    CHECK(q.category == p.category);
    CHECK(q.attributes == p.attributes);
    CHECK(q.queries == p.queries);
    CHECK(q.split == p.split);
    CHECK(io::to_json_line(q) == line);
  }

  TEST_CASE("write_manifest then load_manifest gives the same products") {
    TempDir dir("manifest-roundtrip");
    std::vector<io::Product> products;
    for (int i = 0; i < 50; ++i) {
      io::Product p;
      p.id = "item-" + std::to_string(i);
      p.title = i % 7 == 0 ? "" : "caf\xc3\xa9 \"quoted\" title\twith tab " + std::to_string(i);
      if (i % 3 != 1) p.images = {"images/" + std::to_string(i) + ".png"};
      if (p.title.empty() && p.images.empty()) p.images = {"x.png"};
      p.category = {"root", "leaf" + std::to_string(i % 4)};
      p.attributes = {{"z", "last?"}, {"a", std::to_string(i)}};
      if (i % 2) p.queries = {"q" + std::to_string(i)};
      p.split = i % 3 == 0 ? "train" : i % 3 == 1 ? "val" : "test";
      products.push_back(p);
    }
    const std::string path = dir.file("m.jsonl");
    io::write_manifest(path, products);
    const io::Manifest m = io::load_manifest(path, io::BadRecords::Stop);
    REQUIRE(m.products.size() == products.size());
    CHECK(m.issues.empty());
    CHECK(m.lines_read == 50);
    CHECK(m.folder == dir.path);
    for (size_t i = 0; i < products.size(); ++i) {
      CHECK(m.products[i].id == products[i].id);
      CHECK(m.products[i].title == products[i].title);
      CHECK(m.products[i].images == products[i].images);
      CHECK(m.products[i].category == products[i].category);
      CHECK(m.products[i].attributes == products[i].attributes);
      CHECK(m.products[i].queries == products[i].queries);
      CHECK(m.products[i].split == products[i].split);
      CHECK(m.products[i].line == i + 1);
    }
    CHECK(io::image_path(m, m.products[0], 0) == dir.path + "/images/0.png");
    CHECK(contains(error_of([&] { io::image_path(m, m.products[0], 1); }), "has 1 images, asked for image 1"));
    // Overwriting replaces the whole file and leaves no temporary behind.
    io::write_manifest(path, {products[3]});
    CHECK(io::load_manifest(path, io::BadRecords::Stop).products.size() == 1);
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
  }

  TEST_CASE("skip and stop policies, blank lines, BOM, CRLF and duplicate ids") {
    TempDir dir("manifest-policy");
    const std::string path = dir.file("bad.jsonl");
    write_text(path,
               "\xEF\xBB\xBF{\"id\":\"a\",\"title\":\"first\"}\r\n"  // 1 (BOM, CRLF)
               "\n"                                                    // 2 blank
               "{\"id\":\"b\",\"title\":\"second\",\"split\":\"test\"}\r\n"  // 3
               "{\"id\":\"c\",\"title\":3}\n"                          // 4 bad: title type
               "   \t\n"                                               // 5 blank
               "{\"id\":\"a\",\"title\":\"again\"}\n"                  // 6 bad: duplicate of line 1
               "{\"id\":\"d\",\"title\":\"fourth\",\"split\":\"test\"}\n"  // 7
               "not json\n"                                            // 8 bad
               "{\"id\":\"e\",\"title\":\"last, no newline\"}");       // 9
    CHECK(error_of([&] { io::load_manifest(path, io::BadRecords::Stop); }) ==
          path + ":4: field 'title' must be a string, found number");
    const io::Manifest m = io::load_manifest(path, io::BadRecords::Skip);
    CHECK(m.lines_read == 9);
    REQUIRE(m.products.size() == 4);
    CHECK(m.products[0].id == "a");
    CHECK(m.products[0].title == "first");
    CHECK(m.products[1].line == 3);
    CHECK(m.products[3].title == "last, no newline");
    REQUIRE(m.issues.size() == 3);
    CHECK(m.issues[0].line == 4);
    CHECK(m.issues[1].line == 6);
    CHECK(m.issues[1].reason == "duplicate id 'a' (first seen on line 1)");
    CHECK(m.issues[2].line == 8);
    CHECK(contains(m.issues[2].reason, "invalid JSON at column 2: syntax error while parsing value"));

    io::LoadOptions only_test;
    only_test.split = "test";
    const io::Manifest t = io::load_manifest(path, io::BadRecords::Skip, only_test);
    CHECK(t.products.size() == 2);
    CHECK(t.issues.size() == 3);
    io::LoadOptions two;
    two.limit = 2;
    const io::Manifest l = io::load_manifest(path, io::BadRecords::Stop, two);
    CHECK(l.products.size() == 2);
    CHECK(l.lines_read == 3);
    const io::ManifestStats s = io::manifest_stats(m);
    CHECK(s.per_split.at("test") == 2);
    CHECK(s.per_split.at("") == 2);
    CHECK(contains(error_of([&] { io::load_manifest(dir.file("missing.jsonl"), io::BadRecords::Skip); }),
                   "missing.jsonl"));
  }

  TEST_CASE("check_images makes a missing image a bad line") {
    TempDir dir("manifest-images");
    fs::create_directories(dir.file("images"));
    write_text(dir.file("images/there.png"), "x");
    const std::string path = dir.file("m.jsonl");
    write_text(path, R"({"id":"a","images":["images/there.png"]})" "\n" R"({"id":"b","images":["images/gone.png"]})" "\n");
    CHECK(io::load_manifest(path, io::BadRecords::Stop).products.size() == 2);
    io::LoadOptions check;
    check.check_images = true;
    CHECK(error_of([&] { io::load_manifest(path, io::BadRecords::Stop, check); }) ==
          path + ":2: image 0 not found: " + dir.path + "/images/gone.png");
    const io::Manifest m = io::load_manifest(path, io::BadRecords::Skip, check);
    CHECK(m.products.size() == 1);
    CHECK(m.issues.size() == 1);
  }

  TEST_CASE("splits are a pure function of id and seed, with the requested fractions") {
    // One value is pinned, so that a change of the hash (which would move products to other splits in
    // every manifest already written) fails here.
    CHECK(io::stable_hash("a", 0) != io::stable_hash("b", 0));
    CHECK(io::stable_hash("a", 0) != io::stable_hash("a", 1));
    CHECK(io::stable_hash("fmnist-train-00000", 0) == 0x009926093be65d53ull);
    std::map<std::string, int> counts;
    int moved_by_seed = 0;
    for (int i = 0; i < 10000; ++i) {
      const std::string id = "product-" + std::to_string(i);
      const std::string split = io::assign_split(id, 42);
      CHECK(split == io::assign_split(id, 42));
      ++counts[split];
      moved_by_seed += split != io::assign_split(id, 43);
    }
    CHECK(std::abs(counts["train"] - 8000) < 200);
    CHECK(std::abs(counts["val"] - 1000) < 120);
    CHECK(std::abs(counts["test"] - 1000) < 120);
    CHECK(moved_by_seed > 2000);
    int val = 0;
    for (int i = 0; i < 9000; ++i) val += io::assign_train_val(std::to_string(i) + "x", 0, 1.0 / 9.0) == "val";
    CHECK(std::abs(val - 1000) < 120);
    io::SplitFractions custom{0.5, 0.5, 0.0};
    int test = 0;
    for (int i = 0; i < 1000; ++i) test += io::assign_split(std::to_string(i), 0, custom) == "test";
    CHECK(test == 0);
    CHECK(contains(error_of([] { io::assign_split("a", 0, io::SplitFractions{0.5, 0.2, 0.2}); }),
                   "split fractions must be non-negative and sum to 1"));
  }

  TEST_CASE("IDX: u8 images and labels, i32 and f32 big-endian, gzip'd or not") {
    TempDir dir("idx");
    io::IdxArray images;
    images.type = io::IdxType::U8;
    images.dims = {2, 3, 4};
    for (int i = 0; i < 24; ++i) images.data.push_back(static_cast<uint8_t>(i * 10));
    const std::vector<uint8_t> bytes = io::encode_idx(images);
    REQUIRE(bytes.size() == 4 + 12 + 24);
    CHECK(bytes[2] == 0x08);
    CHECK(bytes[3] == 3);
    CHECK(bytes[7] == 2);  // big-endian dim 0
    write_bytes(dir.file("images-idx3-ubyte"), bytes);
    write_bytes(dir.file("images-idx3-ubyte.gz"), gzip(bytes));
    for (const char* name : {"images-idx3-ubyte", "images-idx3-ubyte.gz"}) {
      const io::IdxArray a = io::read_idx(dir.file(name));
      CHECK(a.type == io::IdxType::U8);
      CHECK(a.dims == std::vector<uint32_t>{2, 3, 4});
      CHECK(a.data == images.data);
    }
    // 1-D labels written by hand.
    write_bytes(dir.file("labels"), {0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9});
    const io::IdxArray labels = io::read_idx(dir.file("labels"));
    CHECK(labels.dims == std::vector<uint32_t>{3});
    CHECK(labels.data == std::vector<uint8_t>{7, 0, 9});
    // i32 and f32 values are big-endian in the file.
    const std::vector<uint8_t> ints = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFE};
    const io::IdxArray i32 = io::parse_idx(ints.data(), ints.size(), "ints");
    REQUIRE(i32.data.size() == 8);
    int32_t values[2];
    std::memcpy(values, i32.data.data(), 8);
    CHECK(values[0] == 0x01020304);
    CHECK(values[1] == -2);
    CHECK(io::encode_idx(i32) == ints);
    const std::vector<uint8_t> floats = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0};
    float f = 0;
    std::memcpy(&f, io::parse_idx(floats.data(), floats.size(), "floats").data.data(), 4);
    CHECK(f == 1.5f);
  }

  TEST_CASE("IDX errors name the file and the broken field") {
    auto err = [](std::vector<uint8_t> b) { return error_of([&] { io::parse_idx(b.data(), b.size(), "x.idx"); }); };
    CHECK(err({0, 0}) == "x.idx: not an IDX file: 2 bytes, shorter than the 4-byte magic");
    CHECK(err({0x1f, 0x8b, 8, 0}) == "x.idx: not an IDX file: the magic must start with two zero bytes, found 31 139");
    CHECK(contains(err({0, 0, 0x07, 1, 0, 0, 0, 0}), "x.idx: unknown IDX dtype byte 0x7"));
    CHECK(err({0, 0, 8, 0}) == "x.idx: IDX header declares 0 dimensions");
    CHECK(err({0, 0, 8, 3, 0, 0, 0, 1}) == "x.idx: IDX header declares 3 dimensions (16 header bytes) but the file has only 8 bytes");
    CHECK(err({0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3}) ==
          "x.idx: IDX dims 2x3 of u8 need 6 data bytes but the file has 3 (truncated?)");
    CHECK(err({0, 0, 0x0E, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}) ==
          "x.idx: IDX dims 4294967295x4294967295 of f64 need more than 2^63 data bytes but the file has 0 (truncated?)");
    CHECK(err({0, 0, 8, 1, 0, 0, 0, 1, 5, 6}) == "x.idx: IDX dims 1 of u8 need 1 data bytes but the file has 2 (1 trailing bytes)");

    TempDir dir("idx-errors");
    std::vector<uint8_t> big(4 + 4 + 5000);
    big[2] = 8;
    big[3] = 1;
    big[6] = 5000 >> 8;
    big[7] = 5000 & 0xFF;
    for (size_t i = 8; i < big.size(); ++i) big[i] = static_cast<uint8_t>(i * 31);
    std::vector<uint8_t> gz = gzip(big);
    gz.resize(gz.size() / 2);
    write_bytes(dir.file("cut.gz"), gz);
    CHECK(contains(error_of([&] { io::read_idx(dir.file("cut.gz")); }), dir.file("cut.gz") + ": truncated gzip stream"));
    std::vector<uint8_t> corrupt = gzip(big);
    corrupt[12] ^= 0xFF;
    corrupt[13] ^= 0xFF;
    write_bytes(dir.file("corrupt.gz"), corrupt);
    const std::string e = error_of([&] { io::read_idx(dir.file("corrupt.gz")); });
    CHECK(contains(e, dir.file("corrupt.gz") + ": "));
    CHECK(contains(error_of([&] { io::read_idx(dir.file("none")); }), dir.file("none")));
    CHECK(contains(error_of([&] { io::gunzip(gzip(big).data(), gzip(big).size(), "b.gz", 100); }),
                   "b.gz: gzip stream decompresses to more than 100 bytes"));
  }

  TEST_CASE("SVG metadata: the work's title and description, subject keywords, entities, CDATA") {
    const std::string svg = R"(<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" width="10"><title>not this</title>
  <metadata id="m1">
    <rdf:RDF>
      <cc:Work rdf:about="">
        <!-- a comment with <dc:title>fake</dc:title> inside -->
        <dc:title>Fish &amp; chips
           on a plate</dc:title>
        <dc:description><![CDATA[Crispy <b>golden</b> & hot]]> &#233;&#x4E2D;&lt;&gt;&quot;&apos;</dc:description>
        <dc:subject>
          <rdf:Bag>
            <rdf:li>food</rdf:li>
            <rdf:li> fish </rdf:li>
            <rdf:li></rdf:li>
            <rdf:li>food</rdf:li>
            <rdf:li>plate &amp; cutlery</rdf:li>
          </rdf:Bag>
        </dc:subject>
        <dc:creator><cc:Agent><dc:title>Jane Artist</dc:title></cc:Agent></dc:creator>
        <dc:type rdf:resource="http://purl.org/dc/dcmitype/StillImage"/>
      </cc:Work>
    </rdf:RDF>
  </metadata>
  <path d="M0 0 L10 10 & not scanned"/>
</svg>)";
    const io::SvgMetadata m = io::parse_svg_metadata(svg, "fish.svg");
    CHECK(m.found);
    CHECK(m.title == "Fish & chips on a plate");
    CHECK(m.description == "Crispy <b>golden</b> & hot \xc3\xa9\xe4\xb8\xad<>\"'");
    CHECK(m.keywords == std::vector<std::string>{"food", "fish", "plate & cutlery"});
  }

  TEST_CASE("SVG metadata: missing fields, no metadata, Agent titles only, rdf:Alt titles") {
    io::SvgMetadata m = io::parse_svg_metadata("<svg><rect/></svg>", "a.svg");
    CHECK(!m.found);
    CHECK(m.title.empty());
    m = io::parse_svg_metadata("<svg><metadata/></svg>", "a.svg");
    CHECK(m.found);
    m = io::parse_svg_metadata(
        "<svg><metadata><rdf:RDF><cc:Work><dc:creator><cc:Agent><dc:title>Bob</dc:title></cc:Agent></dc:creator>"
        "<dc:description></dc:description></cc:Work></rdf:RDF></metadata></svg>",
        "a.svg");
    CHECK(m.title.empty());
    CHECK(m.description.empty());
    CHECK(m.keywords.empty());
    m = io::parse_svg_metadata(
        "<svg><metadata><rdf:RDF><cc:Work><dc:title><rdf:Alt><rdf:li xml:lang=\"en\">Owl</rdf:li></rdf:Alt></dc:title>"
        "</cc:Work></rdf:RDF></metadata></svg>",
        "a.svg");
    CHECK(m.title == "Owl");
    CHECK(m.keywords.empty());
    m = io::parse_svg_metadata("<svg><rdf:RDF><dc:title a='>'>Bare</dc:title></rdf:RDF></svg>", "b.svg");
    CHECK(m.title == "Bare");
  }

  TEST_CASE("SVG metadata errors name the file") {
    auto err = [](const std::string& s) { return error_of([&] { io::parse_svg_metadata(s, "bad.svg"); }); };
    CHECK(err("<metadata><dc:title>x</dc:title>") == "bad.svg: the metadata ends before its <metadata> element is closed");
    CHECK(err("<metadata><dc:title>x</dc:subject></metadata>") == "bad.svg: end tag </dc:subject> does not match <dc:title>");
    CHECK(err("<metadata><dc:title>a &nbsp; b</dc:title></metadata>") ==
          "bad.svg: unknown entity '&nbsp;' (XML knows &amp; &lt; &gt; &quot; &apos; and &#N;)");
    CHECK(err("<metadata><dc:title>a & b</dc:title></metadata>") ==
          "bad.svg: '&' without a matching ';' in \"& b\" (write & as &amp;)");
    CHECK(err("<metadata><dc:title>&#xD800;</dc:title></metadata>") == "bad.svg: invalid character reference '&#xD800;'");
    CHECK(err("<metadata><dc:title>&#99999999;</dc:title></metadata>") == "bad.svg: invalid character reference '&#99999999;'");
    CHECK(err("<metadata><!-- open") == "bad.svg: unterminated comment '<!--' in the metadata");
    CHECK(err("<metadata><![CDATA[ open") == "bad.svg: unterminated CDATA section in the metadata");
    CHECK(err("<metadata><dc:title attr=\"x>") == "bad.svg: unterminated tag '<dc:title attr=\"x>' in the metadata");
    CHECK(err("<metadata>< >") == "bad.svg: a tag without a name in the metadata");
  }
}

// ---- seeded corruption
namespace {

// One random edit of `s`: a bit flip, a truncation, an inserted or deleted run, a duplicated run, or a
// byte replaced by a structural character.
template <class Bytes>
void mutate(Bytes& s, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t(0) : size_t(rng() % n); };
  static const char structural[] = "{}[]\":,\\<>/&;!-?=' \n\r\t0123456789eE+.x#";
  switch (rng() % 7) {
    case 0:
      if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
      break;
    case 1:
      s.resize(pick(s.size() + 1));
      break;
    case 2: {
      const size_t at = pick(s.size() + 1);
      s.insert(s.begin() + at, static_cast<typename Bytes::value_type>(rng() % 256));
      break;
    }
    case 3:
      if (!s.empty()) {
        const size_t at = pick(s.size()), n = std::min(s.size() - at, 1 + pick(8));
        s.erase(s.begin() + at, s.begin() + at + n);
      }
      break;
    case 4:
      if (!s.empty()) {
        const size_t at = pick(s.size()), n = std::min(s.size() - at, 1 + pick(16));
        Bytes run(s.begin() + at, s.begin() + at + n);
        s.insert(s.begin() + pick(s.size() + 1), run.begin(), run.end());
      }
      break;
    default:
      if (!s.empty()) s[pick(s.size())] = structural[pick(sizeof structural - 1)];
      break;
  }
}

}  // namespace

TEST_SUITE("fuzz_manifest") {
  TEST_CASE("mutated manifest lines parse or throw moon::Error, and a file of them loads with Skip") {
    std::mt19937_64 rng(20240601);
    const std::vector<std::string> seeds = {
        kFullLine, R"({"id":"x","images":["a/b.png"],"category":"a/b","attributes":{"n":1e308,"b":true}})",
        R"({"id":"y","title":"\u00e9\ud83d\ude00 \"q\"","split":"test","queries":[]})"};
    TempDir dir("fuzz-manifest");
    std::string file;
    size_t parsed = 0, failed = 0, lines = 0;
    for (int i = 0; i < 6000; ++i) {
      std::string line = seeds[i % seeds.size()];
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) mutate(line, rng);
      try {
        const io::Product p = io::parse_product(line, "fuzz.jsonl", i + 1);
        ++parsed;
        CHECK(!p.id.empty());
        io::parse_product(io::to_json_line(p), "again", 1);  // what we write, we read back
      } catch (const moon::Error& e) {
        ++failed;
        CHECK(contains(e.what(), "fuzz.jsonl:"));
      }
      if (line.find('\n') == std::string::npos && line.find('\r') == std::string::npos) {
        file += line + "\n";
        ++lines;
      }
    }
    CHECK(parsed > 100);
    CHECK(failed > 1000);
    write_text(dir.file("fuzz.jsonl"), file);
    const io::Manifest m = io::load_manifest(dir.file("fuzz.jsonl"), io::BadRecords::Skip);
    CHECK(m.lines_read == lines);
    CHECK(m.products.size() + m.issues.size() <= lines);
    CHECK(!m.issues.empty());
  }

  TEST_CASE("mutated IDX headers and data, plain and gzip'd, parse or throw moon::Error") {
    std::mt19937_64 rng(77);
    io::IdxArray base;
    base.type = io::IdxType::U8;
    base.dims = {3, 5, 7};
    for (int i = 0; i < 105; ++i) base.data.push_back(static_cast<uint8_t>(i));
    const std::vector<uint8_t> plain = io::encode_idx(base);
    const std::vector<uint8_t> gz = gzip(plain);
    size_t parsed = 0;
    for (int i = 0; i < 4000; ++i) {
      std::vector<uint8_t> b = i % 2 ? gz : plain;
      if (i % 5 == 0 && b.size() > 8) {  // length-field edit: a random dim or the dims count
        b[i % 2 ? 9 + rng() % 8 : 3 + rng() % 9] = static_cast<uint8_t>(rng());
      } else {
        for (int e = 0, n = 1 + static_cast<int>(rng() % 3); e < n; ++e) mutate(b, rng);
      }
      try {
        if (b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b) {
          const std::vector<uint8_t> raw = io::gunzip(b.data(), b.size(), "f.gz", 1 << 20);
          io::parse_idx(raw.data(), raw.size(), "f.gz");
        } else {
          const io::IdxArray a = io::parse_idx(b.data(), b.size(), "f.idx");
          CHECK(a.data.size() == a.elements() * a.element_size());
        }
        ++parsed;
      } catch (const moon::Error& e) {
        CHECK((contains(e.what(), "f.gz") || contains(e.what(), "f.idx")));
      }
    }
    CHECK(parsed > 50);
  }

  TEST_CASE("mutated SVG metadata parses or throws moon::Error") {
    std::mt19937_64 rng(4242);
    const std::string base =
        "<svg><metadata><rdf:RDF><cc:Work><dc:title>T &amp; &#x41;</dc:title><dc:description><![CDATA[d<>]]>"
        "</dc:description><!-- c --><dc:subject><rdf:Bag><rdf:li>k1</rdf:li><rdf:li a=\"v>\">k2</rdf:li></rdf:Bag>"
        "</dc:subject><dc:creator><cc:Agent><dc:title>A</dc:title></cc:Agent></dc:creator></cc:Work></rdf:RDF>"
        "</metadata></svg>";
    size_t parsed = 0;
    for (int i = 0; i < 6000; ++i) {
      std::string s = base;
      for (int e = 0, n = 1 + static_cast<int>(rng() % 4); e < n; ++e) mutate(s, rng);
      try {
        const io::SvgMetadata m = io::parse_svg_metadata(s, "m.svg");
        ++parsed;
        CHECK(m.title.size() <= s.size());
      } catch (const moon::Error& e) {
        CHECK(contains(e.what(), "m.svg: "));
      }
    }
    CHECK(parsed > 500);
  }
}
