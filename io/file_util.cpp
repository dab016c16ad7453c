#include "io/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "runtime/error.h"

namespace moon::io {

namespace {

std::string errno_text() { return std::strerror(errno); }

// Opens `path` for reading and checks that it is a regular file.
int open_regular(const std::string& path, struct stat& st) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MOON_CHECK(fd >= 0, path, ": cannot open for reading: ", errno_text());
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  return fd;
}

void write_all(int fd, const std::string& path, const void* data, size_t nbytes) {
  const char* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    const ssize_t n = ::write(fd, p, nbytes);
    if (n < 0 && errno == EINTR) continue;
    MOON_CHECK(n > 0, path, ": write failed: ", errno_text(), " (is the disk full?)");
    p += n;
    nbytes -= static_cast<size_t>(n);
  }
}

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  struct stat st {};
  const int fd = open_regular(path, st);
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? errno_text() : "the file shrank while it was read";
      ::close(fd);
      fail(path, ": read failed: ", why);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

std::string read_file_text(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  return std::string(bytes.begin(), bytes.end());
}

void write_file_atomic(const std::string& path, const std::function<void(const ByteSink&)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  MOON_CHECK(fs::is_directory(folder), path, ": cannot write, the folder ", folder.string(), " does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MOON_CHECK(fd >= 0, tmp, ": cannot create: ", errno_text());
  try {
    write([&](const void* data, size_t nbytes) { write_all(fd, tmp, data, nbytes); });
    MOON_CHECK(::fsync(fd) == 0, tmp, ": fsync failed: ", errno_text());
    MOON_CHECK(::close(fd) == 0, tmp, ": close failed: ", errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail(path, ": cannot rename the temporary file into place: ", why);
  }
  const int dir_fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {  // make the rename durable; a failure here loses nothing already written
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  write_file_atomic(path, [&](const ByteSink& sink) { sink(contents.data(), contents.size()); });
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  MOON_CHECK(!ec && std::filesystem::is_directory(path), path, ": cannot create the folder: ", ec.message());
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  struct stat st {};
  const int fd = open_regular(path, st);
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      fail(path, ": mmap failed: ", why);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace moon::io
