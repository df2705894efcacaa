// Read-only memory map of a whole file. Weights are used in place (zero-copy).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace g4 {

class MappedFile {
 public:
  // Throws g4::Error naming the path when the file cannot be opened or mapped.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // An in-memory "file" (fuzzers, tests): same interface, owns the bytes.
  static std::shared_ptr<MappedFile> from_memory(const std::string& name, std::string bytes);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Page-cache hints on bytes [p, p + n) of the map (pages touching the range; nothing for an
  // in-memory file or bytes outside the map). release: they will not be read again soon, so
  // their pages leave this process's memory; the page cache keeps them while the system has
  // room, and a later read maps them again (the same bytes: the map is private and never
  // written). prefetch: start reading them from the file.
  void release(const uint8_t* p, size_t n) const;
  void prefetch(const uint8_t* p, size_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string owned_;
};

// Whole file into a string (small text files: config.json, token lists).
std::string read_text_file(const std::string& path);

}  // namespace g4
