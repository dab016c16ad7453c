// Suites `image` (decode, resize, crop, normalise, augment, npy, on images encoded in memory) and
// `fuzz_image` (seeded corruption of encoded PNG/JPEG/BMP buffers and .npy headers: decode or moon::Error).
#include <doctest/doctest.h>
#include <stb/stb_image_write.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "io/augment.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/image_transform.h"
#include "io/npy.h"
#include "io/resize.h"
#include "tests/test_util.h"

using namespace moon;
using namespace moon::io;
using moon::test::contains;
using moon::test::error_of;

namespace {

using Bytes = std::vector<uint8_t>;

// stb_image_write callback appending to a byte vector.
void append_bytes(void* ctx, void* data, int size) {
  auto* out = static_cast<Bytes*>(ctx);
  out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
}

// A deterministic test pattern: (H, W, C) u8 with gradients and a few sharp edges.
Image pattern(int w, int h, int c, uint32_t salt = 0) {
  Image im = make_image(w, h, c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) {
        int v = (x * 255) / std::max(w - 1, 1) * (k % 2 == 0) + (y * 255) / std::max(h - 1, 1) * (k % 2 == 1);
        if (k == 2) v = ((x / 3 + y / 5 + salt) % 2) * 200 + 20;
        if (k == 3) v = (x * 37 + y * 11 + salt) % 256;  // alpha
        im.at(y, x, k) = static_cast<uint8_t>(v);
      }
  return im;
}

// A smooth image (no frequencies near Nyquist), for the up-then-down test.
Image smooth(int w, int h) {
  Image im = make_image(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < 3; ++k)
        im.at(y, x, k) = static_cast<uint8_t>(127.5 + 100 * std::sin(0.11 * x + 0.7 * k) * std::cos(0.07 * y));
  return im;
}

Bytes encode_png(const Image& im) {
  Bytes out;
  REQUIRE(stbi_write_png_to_func(append_bytes, &out, im.width, im.height, im.channels, im.pixels.data(),
                                 static_cast<int>(im.row_bytes())));
  return out;
}
Bytes encode_bmp(const Image& im) {
  Bytes out;
  REQUIRE(stbi_write_bmp_to_func(append_bytes, &out, im.width, im.height, im.channels, im.pixels.data()));
  return out;
}
Bytes encode_jpg(const Image& im, int quality = 95) {
  Bytes out;
  REQUIRE(stbi_write_jpg_to_func(append_bytes, &out, im.width, im.height, im.channels, im.pixels.data(), quality));
  return out;
}

Image decode(const Bytes& b, int channels = 3) { return decode_image(b.data(), b.size(), "test.img", channels); }

double mean_abs_diff(const Image& a, const Image& b) {
  REQUIRE(a.pixels.size() == b.pixels.size());
  double s = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
  return s / double(a.pixels.size());
}

std::string temp_path(const std::string& leaf) {
  return (std::filesystem::temp_directory_path() / ("moon_test_image_" + std::to_string(::getpid()) + "_" + leaf)).string();
}

}  // namespace

TEST_SUITE("image") {
  TEST_CASE("decode: lossless PNG grey, RGB and BMP round trip exactly") {
    const Image grey = pattern(13, 7, 1), rgb = pattern(17, 9, 3);
    const Image g1 = decode(encode_png(grey), 1);
    CHECK(g1.width == 13);
    CHECK(g1.height == 7);
    CHECK(g1.channels == 1);
    CHECK(g1.pixels == grey.pixels);
    const Image g3 = decode(encode_png(grey), 3);  // grey replicated
    CHECK(g3.channels == 3);
    for (int y = 0; y < 7; ++y)
      for (int x = 0; x < 13; ++x)
        for (int k = 0; k < 3; ++k) CHECK(g3.at(y, x, k) == grey.at(y, x, 0));
    CHECK(decode(encode_png(rgb)).pixels == rgb.pixels);
    CHECK(decode(encode_bmp(rgb)).pixels == rgb.pixels);
    const Image l = decode(encode_png(rgb), 1);  // PIL "L" luma
    const int r = rgb.at(3, 5, 0), g = rgb.at(3, 5, 1), b = rgb.at(3, 5, 2);
    CHECK(l.at(3, 5, 0) == ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16));
  }

  TEST_CASE("decode: alpha is composited on white") {
    for (int channels : {2, 4}) {
      const Image src = pattern(11, 6, channels, 3);
      const Image out = decode(encode_png(src));
      REQUIRE(out.channels == 3);
      for (int y = 0; y < src.height; ++y)
        for (int x = 0; x < src.width; ++x) {
          const int a = src.at(y, x, channels - 1);
          for (int k = 0; k < 3; ++k) {
            const int c = src.at(y, x, channels == 2 ? 0 : k);
            const int expect = static_cast<int>(std::lround((a * c + (255 - a) * 255) / 255.0));
            CHECK(out.at(y, x, k) == expect);
          }
        }
    }
    // fully transparent is white, fully opaque keeps the colour
    Image two = make_image(2, 1, 4);
    two.pixels = {10, 20, 30, 0, 10, 20, 30, 255};
    CHECK(decode(encode_png(two)).pixels == std::vector<uint8_t>{255, 255, 255, 10, 20, 30});
    CHECK(decode(encode_bmp(pattern(5, 4, 3))).channels == 3);
  }

  TEST_CASE("decode: JPEG is close to the source") {
    const Image src = smooth(40, 24);
    const Bytes jpg = encode_jpg(src, 95);
    CHECK(sniff_image_format(jpg.data(), jpg.size()) == ImageFormat::JPEG);
    const Image out = decode(jpg);
    REQUIRE(out.width == 40);
    REQUIRE(out.height == 24);
    CHECK(mean_abs_diff(out, src) < 3.0);
  }

  TEST_CASE("decode: every bad input is a moon::Error naming the file") {
    const Bytes png = encode_png(pattern(20, 20, 3));
    std::string e = error_of([] { decode_image(nullptr, 0, "empty.png"); });
    CHECK(contains(e, "empty.png: empty file (0 bytes)"));
    const Bytes junk = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    e = error_of([&] { decode_image(junk.data(), junk.size(), "junk.bin"); });
    CHECK(contains(e, "junk.bin: unsupported image format (first bytes 01 02 03"));
    const Bytes gif = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
    CHECK(contains(error_of([&] { decode_image(gif.data(), gif.size(), "a.gif"); }), "a.gif: unsupported image format (a GIF file)"));
    // truncated PNG: the header is intact, the pixel data is not
    e = error_of([&] { decode_image(png.data(), png.size() / 2, "half.png"); });
    CHECK(contains(e, "half.png: PNG header says 20x20 but the data is truncated"));
    // a header that lies about its size
    Bytes liar = png;
    liar[16] = 0, liar[17] = 0, liar[18] = 0x3f, liar[19] = 0xff;  // width 16383
    liar[20] = 0, liar[21] = 0, liar[22] = 0x3f, liar[23] = 0xff;  // height 16383
    e = error_of([&] { decode_image(liar.data(), liar.size(), "liar.png"); });
    CHECK(contains(e, "liar.png: PNG header says 16383x16383 but the data is truncated"));
    // truncated JPEG and BMP
    const Bytes jpg = encode_jpg(pattern(32, 32, 3));
    e = error_of([&] { decode_image(jpg.data(), jpg.size() - 40, "cut.jpg"); });
    CHECK(contains(e, "cut.jpg: JPEG data is truncated"));
    e = error_of([&] { decode_image(jpg.data(), 30, "head.jpg"); });
    CHECK(contains(e, "head.jpg: JPEG data is truncated"));
    const Bytes bmp = encode_bmp(pattern(16, 16, 3));
    e = error_of([&] { decode_image(bmp.data(), bmp.size() - 10, "cut.bmp"); });
    CHECK(contains(e, "cut.bmp: BMP header says 16x16 at 24 bits per pixel but the data is truncated"));
    // a missing file names its path; so does a bad file on disk
    CHECK(contains(error_of([] { load_image("/nonexistent/moon.png"); }), "/nonexistent/moon.png"));
    const std::string path = temp_path("bad.png");
    write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(png.data()), 40));
    CHECK(contains(error_of([&] { load_image(path); }), path + ": "));
    std::filesystem::remove(path);
    CHECK(contains(error_of([&] { decode_image(png.data(), png.size(), "x.png", 2); }), "channels must be 1 or 3"));
  }

  TEST_CASE("resize: the weights are PIL's") {
    // 4 -> 2 bilinear: scale 2, support 2, first centre 1.0: source pixels 0, 1, 2 at distances
    // 0.25, 0.25, 0.75 filter units -> 0.75, 0.75, 0.25, normalised by 1.75.
    const ResampleTable t = resample_table(4, 0.0f, 4.0f, 2, ResizeFilter::Bilinear);
    CHECK(t.taps == 5);
    CHECK(t.first[0] == 0);
    CHECK(t.count[0] == 3);
    CHECK(t.weights[0] == doctest::Approx(0.75 / 1.75));
    CHECK(t.weights[1] == doctest::Approx(0.75 / 1.75));
    CHECK(t.weights[2] == doctest::Approx(0.25 / 1.75));
    CHECK(t.first[1] == 1);
    CHECK(t.count[1] == 3);
    CHECK(t.fixed[0] == static_cast<int32_t>(0.75 / 1.75 * (1 << 22) + 0.5));
    // bicubic upscale by 2: the centre of output 1 is source 0.75, four taps with a = -0.5
    const ResampleTable c = resample_table(8, 0.0f, 8.0f, 16, ResizeFilter::Bicubic);
    CHECK(c.taps == 5);
    for (int o = 0; o < 16; ++o) {
      double sum = 0;
      int64_t fixed_sum = 0;
      for (int i = 0; i < c.count[o]; ++i) sum += c.weights[o * c.taps + i], fixed_sum += c.fixed[o * c.taps + i];
      CHECK(sum == doctest::Approx(1.0));
      CHECK(std::abs(fixed_sum - (1 << 22)) <= c.count[o]);
    }
    CHECK(c.first[5] == 1);  // centre 5.5 * 0.5 = 2.75: the window starts at int(2.75 - 2 + 0.5) = 1
    CHECK(c.count[5] == 4);  // and ends before int(2.75 + 2 + 0.5) = 5
  }

  TEST_CASE("resize: constant stays constant, same size copies, up then down inverts") {
    Image flat = make_image(37, 23, 3);
    for (size_t i = 0; i < flat.pixels.size(); ++i) flat.pixels[i] = static_cast<uint8_t>(40 + (i % 3) * 70);
    for (ResizeFilter f : {ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Bicubic})
      for (auto [w, h] : {std::pair{5, 3}, std::pair{100, 61}, std::pair{37, 10}, std::pair{12, 23}}) {
        const Image r = resize(flat, w, h, f);
        REQUIRE(r.width == w);
        REQUIRE(r.height == h);
        for (size_t i = 0; i < r.pixels.size(); ++i) REQUIRE(r.pixels[i] == 40 + (i % 3) * 70);
      }
    const Image src = pattern(29, 31, 3);
    CHECK(resize(src, 29, 31, ResizeFilter::Bicubic).pixels == src.pixels);
    const Image s = smooth(48, 40);
    for (ResizeFilter f : {ResizeFilter::Bilinear, ResizeFilter::Bicubic}) {
      const Image back = resize(resize(s, 96, 80, f), 48, 40, f);
      CHECK(mean_abs_diff(back, s) < 1.5);
    }
    // nearest picks floor((x + 0.5) * scale)
    Image row = make_image(4, 1, 1);
    row.pixels = {10, 20, 30, 40};
    CHECK(resize(row, 2, 1, ResizeFilter::Nearest).pixels == std::vector<uint8_t>{20, 40});
    CHECK(resize(row, 8, 1, ResizeFilter::Nearest).pixels == std::vector<uint8_t>{10, 10, 20, 20, 30, 30, 40, 40});
    CHECK(contains(error_of([&] { resize(row, 0, 1, ResizeFilter::Bilinear); }), "output size must be positive"));
    CHECK(contains(error_of([] { parse_resize_filter("lanczos"); }), "unknown resize filter 'lanczos'"));
  }

  TEST_CASE("crop: centre crop rounds odd margins like torchvision, pads when larger") {
    Image col = make_image(1, 9, 1);
    for (int y = 0; y < 9; ++y) col.pixels[y] = static_cast<uint8_t>(y);
    CHECK(center_crop(col, 4, 1).pixels[0] == 2);  // margin 5: round(2.5) = 2
    Image col7 = make_image(1, 7, 1);
    for (int y = 0; y < 7; ++y) col7.pixels[y] = static_cast<uint8_t>(y);
    CHECK(center_crop(col7, 4, 1).pixels[0] == 2);  // margin 3: round(1.5) = 2
    CHECK(center_crop(col7, 2, 1).pixels[0] == 2);  // margin 5 of 7: round(2.5) = 2
    CHECK(center_crop(col7, 6, 1).pixels[0] == 0);  // margin 1: round(0.5) = 0
    const Image padded = center_crop(col7, 10, 1);  // pads 1 above (3 // 2), 2 below
    CHECK(padded.pixels == std::vector<uint8_t>{0, 0, 1, 2, 3, 4, 5, 6, 0, 0});
    CHECK(shortest_side_size(480, 640, 224) == std::array<int, 2>{224, 298});
    CHECK(shortest_side_size(640, 480, 224) == std::array<int, 2>{298, 224});
    CHECK(resize_shortest_center_crop(pattern(64, 48, 3), 32, ResizeFilter::Bicubic).width == 32);
  }

  TEST_CASE("normalise: presets and the (3, H, W) tensor") {
    Image im = make_image(2, 1, 3);
    im.pixels = {0, 128, 255, 255, 0, 128};
    const Tensor t = to_tensor(im, Normalization::Clip);
    CHECK(t.shape() == Shape{3, 1, 2});
    const float* d = t.data<float>();
    CHECK(d[0] == doctest::Approx((0.0f - 0.48145466f) / 0.26862954f));
    CHECK(d[1] == doctest::Approx((1.0f - 0.48145466f) / 0.26862954f));
    CHECK(d[2] == doctest::Approx((128 / 255.0f - 0.4578275f) / 0.26130258f));
    CHECK(d[5] == doctest::Approx((128 / 255.0f - 0.40821073f) / 0.27577711f));
    CHECK(to_tensor(im, Normalization::Siglip).data<float>()[1] == doctest::Approx(1.0f));
    CHECK(to_tensor(im, Normalization::None).data<float>()[2] == doctest::Approx(128 / 255.0f));
    CHECK(to_tensor(im, Normalization::ImageNet).data<float>()[0] == doctest::Approx(-0.485f / 0.229f));
    const Tensor p = preprocess(pattern(50, 30, 3), {16, ResizeFilter::Bicubic, true, Normalization::Clip});
    CHECK(p.shape() == Shape{3, 16, 16});
    const Tensor g = preprocess(pattern(50, 30, 1), {8, ResizeFilter::Bilinear, false, Normalization::Siglip});
    CHECK(g.shape() == Shape{3, 8, 8});
    CHECK(contains(error_of([] { parse_normalization("openai"); }), "unknown normalisation 'openai'"));
  }

  TEST_CASE("preprocess: a grey image gives exactly what its RGB conversion gives; preprocess_into fills a row") {
    const Image grey = pattern(50, 30, 1);
    for (bool crop : {true, false}) {
      const PreprocessOptions o{12, ResizeFilter::Bicubic, crop, Normalization::Clip};
      CHECK(preprocess(grey, o).to_vector<float>() == preprocess(convert_channels(grey, 3), o).to_vector<float>());
      std::vector<float> row(3 * 12 * 12 + 1, -7.0f);  // one guard element after the row
      preprocess_into(grey, o, row.data());
      CHECK(std::vector<float>(row.begin(), row.end() - 1) == preprocess(grey, o).to_vector<float>());
      CHECK(row.back() == -7.0f);
    }
  }

  TEST_CASE("augment: deterministic per (seed, stream), whichever thread runs it") {
    const Image src = pattern(80, 60, 3);
    AugmentOptions o;
    o.size = 32;
    o.brightness = 0.4f, o.contrast = 0.4f, o.saturation = 0.4f, o.hue = 0.1f;
    std::vector<Image> serial;
    for (uint64_t s = 0; s < 8; ++s) serial.push_back(augment(src, o, 1234, s));
    std::vector<Image> parallel(8);
    std::vector<std::thread> threads;
    for (int t = 7; t >= 0; --t) threads.emplace_back([&, t] { parallel[t] = augment(src, o, 1234, t); });
    for (auto& th : threads) th.join();
    int distinct = 0;
    for (int s = 0; s < 8; ++s) {
      CHECK(parallel[s].pixels == serial[s].pixels);
      CHECK(serial[s].width == 32);
      distinct += s > 0 && serial[s].pixels != serial[s - 1].pixels;
    }
    CHECK(distinct == 7);
    CHECK(augment(src, o, 99, 3).pixels != serial[3].pixels);  // another seed, another view
  }

  TEST_CASE("augment: the options do what they say") {
    const Image src = pattern(40, 40, 3);
    CHECK(flip_horizontal(flip_horizontal(src)).pixels == src.pixels);
    CHECK(flip_horizontal(src).at(3, 0, 1) == src.at(3, 39, 1));
    AugmentOptions plain;
    plain.size = 24;
    plain.scale_min = plain.scale_max = 1.0f;
    plain.ratio_min = plain.ratio_max = 1.0f;
    plain.flip_probability = 0.0f;
    for (uint64_t s = 0; s < 4; ++s) CHECK(augment(src, plain, 7, s).pixels == resize(src, 24, 24, ResizeFilter::Bicubic).pixels);
    // non-square with ratio fixed at 1: no try fits, the fallback takes the centred square
    const CropBox fb = random_resized_crop_box(30, 50, plain, 7, 0);
    CHECK(fb.height == 30);
    CHECK(fb.width == 30);
    CHECK(fb.left == 10);
    AugmentOptions none;
    none.size = 40;
    none.random_resized_crop = false;
    none.flip_probability = 0.0f;
    CHECK(augment(src, none, 1, 1).pixels == src.pixels);  // jitter 0 = unchanged
    none.flip_probability = 1.0f;
    CHECK(augment(src, none, 1, 1).pixels == flip_horizontal(src).pixels);
    // crops respect the scale range
    AugmentOptions o;
    for (uint64_t s = 0; s < 200; ++s) {
      const CropBox b = random_resized_crop_box(100, 120, o, 5, s);
      CHECK(b.top >= 0);
      CHECK(b.left >= 0);
      CHECK(b.top + b.height <= 100);
      CHECK(b.left + b.width <= 120);
      const double frac = double(b.height) * b.width / 12000.0;
      CHECK(frac >= 0.07);
      CHECK(frac <= 1.0);
    }
    CHECK(adjust_brightness(src, 1.0f).pixels == src.pixels);
    CHECK(adjust_saturation(src, 1.0f).pixels == src.pixels);
    CHECK(adjust_contrast(src, 1.0f).pixels == src.pixels);
    CHECK(mean_abs_diff(adjust_hue(src, 0.0f), src) < 0.01);
    const Image dark = adjust_brightness(src, 0.0f);
    CHECK(std::all_of(dark.pixels.begin(), dark.pixels.end(), [](uint8_t v) { return v == 0; }));
    const Image greyed = adjust_saturation(src, 0.0f);
    CHECK(std::abs(int(greyed.at(5, 5, 0)) - int(greyed.at(5, 5, 2))) <= 1);
  }

  TEST_CASE("npy: round trip of f32, i64, i32, u8 and numpy's exact header") {
    const std::string h = npy_header(DType::F32, {3, 224, 224});
    CHECK(h.size() % 64 == 0);
    const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), }";
    CHECK(h.substr(10, dict.size()) == dict);
    CHECK(h.back() == '\n');
    CHECK(contains(npy_header(DType::I64, {5}), "'shape': (5,), }"));
    CHECK(contains(npy_header(DType::U8, {}), "'descr': '|u1', 'fortran_order': False, 'shape': (), }"));
    const std::string path = temp_path("rt.npy");
    const Tensor f = from_vector<float>({1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, 7.0f}, {2, 3}, DType::F32);
    save_npy(path, f);
    const Tensor g = load_npy(path);
    CHECK(g.shape() == Shape{2, 3});
    CHECK(g.to_vector<float>() == f.to_vector<float>());
    const Tensor i64 = from_vector<int64_t>({-1, 1LL << 40, 3}, {3}, DType::I64);
    save_npy(path, i64);
    CHECK(load_npy(path).to_vector<int64_t>() == i64.to_vector<int64_t>());
    const Tensor i32 = from_vector<int32_t>({-7, 8}, {1, 2, 1}, DType::I32);
    save_npy(path, i32);
    CHECK(load_npy(path).shape() == Shape{1, 2, 1});
    const Tensor u8 = from_vector<uint8_t>({0, 255, 9}, {3}, DType::U8);
    save_npy(path, u8);
    CHECK(load_npy(path).to_vector<uint8_t>() == u8.to_vector<uint8_t>());
    save_npy(path, f.transpose(0, 1));  // a strided view is written C-ordered
    CHECK(load_npy(path).shape() == Shape{3, 2});
    CHECK(load_npy(path).to_vector<float>()[1] == 0.0f);
    std::filesystem::remove(path);
  }

  TEST_CASE("npy: bad files name the file and the problem") {
    const std::string good = npy_header(DType::F32, {2, 2}) + std::string(16, '\0');
    auto parse = [](const std::string& s) {
      return error_of([&] { parse_npy(reinterpret_cast<const uint8_t*>(s.data()), s.size(), "x.npy"); });
    };
    CHECK(parse(good).empty());
    CHECK(contains(parse("hello world"), "x.npy: not a .npy file"));
    CHECK(contains(parse(good.substr(0, good.size() - 4)), "x.npy: .npy data is truncated"));
    CHECK(contains(parse(good + "xx"), "has trailing bytes"));
    std::string f8 = good;
    f8.replace(f8.find("<f4"), 3, "<f8");
    CHECK(contains(parse(f8), "x.npy: unsupported .npy dtype '<f8'"));
    std::string fortran = good;
    fortran.replace(fortran.find("False"), 5, "True ");
    CHECK(contains(parse(fortran), "Fortran order"));
    std::string badkey = good;
    badkey.replace(badkey.find("shape"), 5, "shope");
    CHECK(contains(parse(badkey), "x.npy: bad .npy header: unknown key 'shope'"));
    std::string badshape = good;
    badshape.replace(badshape.find("(2, 2)"), 6, "(2, x)");
    CHECK(contains(parse(badshape), "expected a non-negative integer"));
    CHECK(contains(parse(good.substr(0, 30)), "truncated .npy header"));
    CHECK(contains(error_of([] { load_npy("/nonexistent/a.npy"); }), "/nonexistent/a.npy"));
    CHECK(contains(error_of([] { save_npy("/tmp/x.npy", from_vector<float>({1}, {1}, DType::BF16)); }), "not supported"));
  }
}

TEST_SUITE("fuzz_image") {
  // Applies one seeded corruption to a valid encoded buffer.
  Bytes mutate(const Bytes& src, std::mt19937_64& rng, ImageFormat format) {
    Bytes b = src;
    auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
    switch (rng() % 6) {
      case 0:  // bit flips
        for (int i = 0, n = 1 + int(rng() % 8); i < n; ++i) b[pick(b.size())] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // truncation
        b.resize(pick(b.size()));
        break;
      case 2: {  // insertion of random bytes
        const size_t at = pick(b.size());
        Bytes ins(1 + pick(16));
        for (auto& v : ins) v = static_cast<uint8_t>(rng());
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), ins.begin(), ins.end());
        break;
      }
      case 3: {  // header size fields
        auto put = [&](size_t at, uint8_t v) {
          if (at < b.size()) b[at] = v;
        };
        const uint8_t v = static_cast<uint8_t>(rng() % 3 == 0 ? 0xff : rng());
        if (format == ImageFormat::PNG) put(16 + pick(8), v);                  // IHDR width/height
        if (format == ImageFormat::BMP) put(pick(4) < 2 ? 18 + pick(8) : 10 + pick(4), v);  // size, offset
        if (format == ImageFormat::JPEG) {
          for (size_t i = 2; i + 9 < b.size(); ++i)
            if (b[i] == 0xFF && b[i + 1] == 0xC0) {  // SOF0: height at +5, width at +7
              put(i + 5 + pick(4), v);
              break;
            }
        }
        break;
      }
      case 4: {  // overwrite a run with one byte
        const size_t at = pick(b.size()), n = 1 + pick(32);
        const uint8_t v = static_cast<uint8_t>(rng());
        for (size_t i = at; i < std::min(b.size(), at + n); ++i) b[i] = v;
        break;
      }
      default: {  // duplicate a slice
        const size_t at = pick(b.size()), n = 1 + pick(64);
        Bytes slice(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(std::min(b.size(), at + n)));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(pick(b.size())), slice.begin(), slice.end());
        break;
      }
    }
    return b;
  }

  TEST_CASE("fuzz: corrupted PNG, JPEG and BMP decode or throw moon::Error") {
    std::vector<std::pair<Bytes, ImageFormat>> seeds = {
        {encode_png(pattern(24, 16, 3)), ImageFormat::PNG}, {encode_png(pattern(16, 16, 4)), ImageFormat::PNG},
        {encode_png(pattern(20, 12, 1)), ImageFormat::PNG}, {encode_png(pattern(9, 9, 2)), ImageFormat::PNG},
        {encode_jpg(pattern(24, 16, 3), 90), ImageFormat::JPEG}, {encode_jpg(pattern(16, 16, 1), 50), ImageFormat::JPEG},
        {encode_bmp(pattern(15, 10, 3)), ImageFormat::BMP}, {encode_bmp(pattern(8, 8, 4)), ImageFormat::BMP}};
    std::mt19937_64 rng(20240601);
    int decoded = 0, rejected = 0, unnamed = 0;
    const int per_seed = 1000;
    for (const auto& [bytes, format] : seeds) {
      for (int i = 0; i < per_seed; ++i) {
        Bytes b = mutate(bytes, rng, format);
        if (rng() % 4 == 0) b = mutate(b, rng, format);  // sometimes two corruptions
        try {
          const Image im = decode_image(b.data(), b.size(), "fuzz.img", (i % 3 == 0) ? 1 : 3);
          REQUIRE(im.pixels.size() == size_t(im.width) * im.height * im.channels);
          ++decoded;
        } catch (const Error& e) {
          ++rejected;
          unnamed += std::string(e.what()).rfind("fuzz.img: ", 0) != 0;
        }
      }
    }
    MESSAGE("fuzz_image: ", decoded, " decoded, ", rejected, " rejected with moon::Error");
    CHECK(decoded + rejected == per_seed * int(seeds.size()));
    CHECK(unnamed == 0);
    CHECK(rejected > 500);
    CHECK(decoded > 200);
  }

  TEST_CASE("fuzz: corrupted .npy headers parse or throw moon::Error") {
    const std::string text = npy_header(DType::F32, {2, 3, 4}) + std::string(96, '\x01');
    const Bytes good(text.begin(), text.end());
    std::mt19937_64 rng(77);
    int parsed = 0, rejected = 0;
    for (int i = 0; i < 3000; ++i) {
      Bytes b = good;
      const size_t header = 64;
      switch (rng() % 4) {
        case 0: b[rng() % header] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: b.resize(rng() % b.size()); break;
        case 2: b[10 + rng() % (header - 10)] = "(),:'{} 0123456789TrueFalse<f4i8"[rng() % 32]; break;
        default: b[8 + rng() % 2] = static_cast<uint8_t>(rng()); break;  // header length
      }
      try {
        const Tensor t = parse_npy(b.data(), b.size(), "fuzz.npy");
        CHECK(size_t(t.numel()) * dtype_size(t.dtype()) <= b.size());
        ++parsed;
      } catch (const Error& e) {
        CHECK(std::string(e.what()).rfind("fuzz.npy: ", 0) == 0);
        ++rejected;
      }
    }
    MESSAGE("fuzz_npy: ", parsed, " parsed, ", rejected, " rejected");
    CHECK(rejected > 1000);
  }
}
