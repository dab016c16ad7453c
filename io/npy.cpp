// .npy reading and writing (see npy.h). The header dict is parsed by a small strict scanner: the three
// keys numpy writes, in any order, and nothing else; every failure names the file and the field.
#include "io/npy.h"

#include <cstring>
#include <limits>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

namespace {

const char kMagic[6] = {'\x93', 'N', 'U', 'M', 'P', 'Y'};

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::F32: return "<f4";
    case DType::I64: return "<i8";
    case DType::I32: return "<i4";
    case DType::U8: return "|u1";
    default: return nullptr;
  }
}

// A cursor over the header dict text with the small grammar we accept.
struct HeaderScanner {
  const std::string& text;
  const std::string& name;
  size_t pos = 0;

  [[noreturn]] void error(const std::string& what) const {
    fail(name, ": bad .npy header: ", what, " at character ", pos, " of \"", text, "\"");
  }
  void skip_space() {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n')) ++pos;
  }
  bool accept(char c) {
    skip_space();
    if (pos < text.size() && text[pos] == c) return ++pos, true;
    return false;
  }
  void expect(char c) {
    if (!accept(c)) error(std::string("expected '") + c + "'");
  }
  std::string quoted() {  // 'text' or "text"
    skip_space();
    if (pos >= text.size() || (text[pos] != '\'' && text[pos] != '"')) error("expected a quoted string");
    const char q = text[pos++];
    const size_t end = text.find(q, pos);
    if (end == std::string::npos) error("unterminated string");
    std::string s = text.substr(pos, end - pos);
    pos = end + 1;
    return s;
  }
  bool boolean() {
    skip_space();
    if (text.compare(pos, 4, "True") == 0) return pos += 4, true;
    if (text.compare(pos, 5, "False") == 0) return pos += 5, false;
    error("expected True or False");
  }
  int64_t integer() {
    skip_space();
    if (pos >= text.size() || text[pos] < '0' || text[pos] > '9') error("expected a non-negative integer");
    int64_t v = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) error("dimension too large");
      v = v * 10 + (text[pos++] - '0');
    }
    if (pos < text.size() && text[pos] == 'L') ++pos;  // Python 2 longs
    return v;
  }
  Shape tuple() {  // (), (5,), (3, 4)
    expect('(');
    Shape shape;
    while (!accept(')')) {
      shape.push_back(integer());
      if (!accept(',')) {
        expect(')');
        break;
      }
    }
    return shape;
  }
};

}  // namespace

std::string npy_header(DType dtype, const Shape& shape) {
  const char* descr = descr_of(dtype);
  MOON_CHECK(descr, "npy: dtype ", dtype_name(dtype), " is not supported; use f32, i64, i32 or u8");
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (";
  for (size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) dict += ',';  // a 1-tuple, as Python writes it
  dict += "), }";
  // magic(6) + version(2) + length(2) + dict + padding + '\n' is a multiple of 64
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  MOON_CHECK(dict.size() <= 65535, "npy: header too long for format 1.0 (shape ", shape_str(shape), ")");
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xff);
  out += static_cast<char>(dict.size() >> 8);
  return out + dict;
}

void save_npy(const std::string& path, const Tensor& t) {
  MOON_CHECK(descr_of(t.dtype()), path, ": save_npy: dtype ", dtype_name(t.dtype()),
             " is not supported; convert with .to(DType::F32) first");
  Tensor host = t.device().is_cpu() ? t : t.to(kCPU);
  host = host.contiguous();
  const std::string header = npy_header(host.dtype(), host.shape());
  const size_t nbytes = static_cast<size_t>(host.numel()) * dtype_size(host.dtype());
  write_file_atomic(path, [&](const ByteSink& sink) {
    sink(header.data(), header.size());
    if (nbytes) sink(host.raw_data(), nbytes);
  });
}

Tensor parse_npy(const uint8_t* data, size_t size, const std::string& name) {
  if (size < 10 || std::memcmp(data, kMagic, 6) != 0)
    fail(name, ": not a .npy file (missing the \\x93NUMPY magic; ", size, " bytes)");
  const int major = data[6];
  MOON_CHECK(major >= 1 && major <= 3, name, ": unsupported .npy format version ", major, ".", int(data[7]),
             " (moon reads 1.0, 2.0 and 3.0)");
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = data[8] | (size_t(data[9]) << 8);
    header_start = 10;
  } else {
    MOON_CHECK(size >= 12, name, ": truncated .npy header (", size, " bytes)");
    header_len = data[8] | (size_t(data[9]) << 8) | (size_t(data[10]) << 16) | (size_t(data[11]) << 24);
    header_start = 12;
  }
  MOON_CHECK(header_len <= size - header_start, name, ": truncated .npy header (it says ", header_len,
             " bytes, the file has ", size - header_start, " after the preamble)");
  const std::string text(reinterpret_cast<const char*>(data + header_start), header_len);

  HeaderScanner s{text, name};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  Shape shape;
  s.expect('{');
  while (!s.accept('}')) {
    const std::string key = s.quoted();
    s.expect(':');
    if (key == "descr") descr = s.quoted(), have_descr = true;
    else if (key == "fortran_order") fortran = s.boolean(), have_order = true;
    else if (key == "shape") shape = s.tuple(), have_shape = true;
    else s.error("unknown key '" + key + "'");
    if (!s.accept(',')) {
      s.expect('}');
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape)
    fail(name, ": bad .npy header: missing '", !have_descr ? "descr" : !have_order ? "fortran_order" : "shape",
         "' in \"", text, "\"");
  MOON_CHECK(!fortran, name, ": .npy array is in Fortran order; save it C-ordered (np.ascontiguousarray)");
  DType dtype;
  if (descr == "<f4") dtype = DType::F32;
  else if (descr == "<i8") dtype = DType::I64;
  else if (descr == "<i4") dtype = DType::I32;
  else if (descr == "|u1" || descr == "<u1") dtype = DType::U8;
  else fail(name, ": unsupported .npy dtype '", descr, "' (moon reads <f4, <i8, <i4 and |u1)");

  const size_t elem = dtype_size(dtype);
  size_t numel = 1;
  for (int64_t d : shape) {
    MOON_CHECK(d == 0 || numel <= (size_t(1) << 48) / size_t(d), name, ": .npy shape ", shape_str(shape), " is too large");
    numel *= size_t(d);
  }
  const size_t data_start = header_start + header_len;
  const size_t have = size - data_start;
  MOON_CHECK(have == numel * elem, name, ": .npy data ", have < numel * elem ? "is truncated" : "has trailing bytes",
             ": the header says shape ", shape_str(shape), " of ", descr, " = ", numel * elem, " bytes, the file has ",
             have);
  Tensor t = empty(shape, dtype);
  if (numel) std::memcpy(t.raw_data(), data + data_start, numel * elem);
  return t;
}

Tensor load_npy(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return parse_npy(bytes.data(), bytes.size(), path);
}

}  // namespace moon::io
