// File helpers shared by every reader and writer in io/: whole-file reads with errors that name the file,
// and atomic writes (a temporary file in the same folder, fsync, rename), so that a crash never leaves a
// half-written checkpoint or manifest behind.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace moon::io {

// The whole file as bytes. Throws moon::Error naming the path (missing, unreadable, a directory).
std::vector<uint8_t> read_file_bytes(const std::string& path);
std::string read_file_text(const std::string& path);

// Writes `path` atomically: `path.tmp.<pid>` is written through `write` (called with a FILE*-like sink),
// flushed and fsync'ed, then renamed over `path`, and the folder is fsync'ed. On any error the temporary
// file is removed and `path` is untouched.
using ByteSink = std::function<void(const void* data, size_t nbytes)>;
void write_file_atomic(const std::string& path, const std::function<void(const ByteSink&)>& write);
void write_file_atomic(const std::string& path, std::string_view contents);

// Creates a folder and its parents (no error if it exists). Throws naming the path on failure.
void make_dirs(const std::string& path);

// A read-only memory map of a whole file; empty files map to data() == nullptr, size() == 0.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // throws naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace moon::io
