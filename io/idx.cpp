// IDX reading and writing, and gzip decompression through zlib (see io/idx.h).
#include "io/idx.h"

#include <zlib.h>

#include <algorithm>

#include "io/file_util.h"
#include "runtime/error.h"

namespace moon::io {

size_t idx_element_size(IdxType type) {
  switch (type) {
    case IdxType::U8: case IdxType::I8: return 1;
    case IdxType::I16: return 2;
    case IdxType::I32: case IdxType::F32: return 4;
    case IdxType::F64: return 8;
  }
  return 0;
}

const char* idx_type_name(IdxType type) {
  switch (type) {
    case IdxType::U8: return "u8";
    case IdxType::I8: return "i8";
    case IdxType::I16: return "i16";
    case IdxType::I32: return "i32";
    case IdxType::F32: return "f32";
    case IdxType::F64: return "f64";
  }
  return "?";
}

size_t IdxArray::element_size() const { return idx_element_size(type); }

size_t IdxArray::elements() const {
  size_t n = 1;
  for (uint32_t d : dims) n *= d;
  return n;
}

namespace {

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

bool known_type(uint8_t code) {
  return code == 0x08 || code == 0x09 || code == 0x0B || code == 0x0C || code == 0x0D || code == 0x0E;
}

// Swaps each element of `size` bytes in place (big-endian file order <-> little-endian machine order).
void swap_elements(std::vector<uint8_t>& data, size_t size) {
  if (size == 1) return;
  for (size_t i = 0; i + size <= data.size(); i += size) std::reverse(data.begin() + i, data.begin() + i + size);
}

}  // namespace

IdxArray parse_idx(const uint8_t* bytes, size_t nbytes, const std::string& name) {
  MOON_CHECK(nbytes >= 4, name, ": not an IDX file: ", nbytes, " bytes, shorter than the 4-byte magic");
  MOON_CHECK(bytes[0] == 0 && bytes[1] == 0, name, ": not an IDX file: the magic must start with two zero bytes, found ",
             int(bytes[0]), " ", int(bytes[1]));
  MOON_CHECK(known_type(bytes[2]), name, ": unknown IDX dtype byte 0x", std::hex, int(bytes[2]),
             std::dec, " (expected 08 u8, 09 i8, 0B i16, 0C i32, 0D f32 or 0E f64)");
  const size_t ndim = bytes[3];
  MOON_CHECK(ndim >= 1, name, ": IDX header declares 0 dimensions");
  const size_t header = 4 + 4 * ndim;
  MOON_CHECK(nbytes >= header, name, ": IDX header declares ", ndim, " dimensions (", header,
             " header bytes) but the file has only ", nbytes, " bytes");
  IdxArray out;
  out.type = static_cast<IdxType>(bytes[2]);
  const size_t elem = idx_element_size(out.type);
  size_t expected = elem;  // data bytes the header declares; saturates instead of overflowing
  bool overflow = false;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t size = read_be32(bytes + 4 + 4 * d);
    out.dims.push_back(size);
    if (size != 0 && expected > (size_t(-1) >> 1) / size) overflow = true;
    else expected *= size;
  }
  auto dims_text = [&] {
    std::string s;
    for (uint32_t d : out.dims) {
      if (!s.empty()) s += 'x';
      s += std::to_string(d);
    }
    return s;
  };
  const size_t available = nbytes - header;
  MOON_CHECK(!overflow && expected <= available, name, ": IDX dims ", dims_text(), " of ", idx_type_name(out.type),
             " need ", overflow ? std::string("more than 2^63") : std::to_string(expected), " data bytes but the file has ",
             available, " (truncated?)");
  MOON_CHECK(expected == available, name, ": IDX dims ", dims_text(), " of ", idx_type_name(out.type), " need ", expected,
             " data bytes but the file has ", available, " (", available - expected, " trailing bytes)");
  out.data.assign(bytes + header, bytes + nbytes);
  swap_elements(out.data, elem);
  return out;
}

std::vector<uint8_t> gunzip(const uint8_t* bytes, size_t nbytes, const std::string& name, size_t max_bytes) {
  z_stream zs{};
  MOON_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, name, ": zlib inflateInit2 failed");
  std::vector<uint8_t> out;
  zs.next_in = const_cast<Bytef*>(bytes);
  size_t consumed = 0;  // input bytes handed to zlib so far (avail_in is 32-bit)
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (zs.avail_in == 0 && consumed < nbytes) {
      const size_t chunk = std::min<size_t>(nbytes - consumed, 1u << 30);
      zs.next_in = const_cast<Bytef*>(bytes + consumed);
      zs.avail_in = static_cast<uInt>(chunk);
      consumed += chunk;
    }
    if (out.size() == max_bytes) {
      inflateEnd(&zs);
      fail(name, ": gzip stream decompresses to more than ", max_bytes, " bytes");
    }
    const size_t before = out.size();
    const size_t grow = std::min(max_bytes - before, std::max<size_t>(before, 1 << 16));
    out.resize(before + grow);
    zs.next_out = out.data() + before;
    zs.avail_out = static_cast<uInt>(std::min<size_t>(grow, 1u << 30));
    rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(before + (std::min<size_t>(grow, 1u << 30) - zs.avail_out));
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && consumed == nbytes) {
      inflateEnd(&zs);
      fail(name, ": truncated gzip stream (", nbytes, " compressed bytes end before the data does; re-download or reinstall the file)");
    }
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      const std::string why = zs.msg ? zs.msg : "error " + std::to_string(rc);
      inflateEnd(&zs);
      fail(name, ": corrupt gzip stream: ", why);
    }
  }
  inflateEnd(&zs);
  return out;
}

IdxArray read_idx(const std::string& path) {
  const std::vector<uint8_t> raw = read_file_bytes(path);
  if (raw.size() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
    const std::vector<uint8_t> bytes = gunzip(raw.data(), raw.size(), path);
    return parse_idx(bytes.data(), bytes.size(), path);
  }
  return parse_idx(raw.data(), raw.size(), path);
}

std::vector<uint8_t> encode_idx(const IdxArray& array) {
  MOON_CHECK(!array.dims.empty() && array.dims.size() <= 255, "encode_idx: an IDX array has 1 to 255 dims, got ",
             array.dims.size());
  MOON_CHECK(array.data.size() == array.elements() * array.element_size(), "encode_idx: ", array.data.size(),
             " data bytes do not match the dims");
  std::vector<uint8_t> out = {0, 0, static_cast<uint8_t>(array.type), static_cast<uint8_t>(array.dims.size())};
  for (uint32_t d : array.dims)
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<uint8_t>(d >> shift));
  std::vector<uint8_t> data = array.data;
  swap_elements(data, array.element_size());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

}  // namespace moon::io
