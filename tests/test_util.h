// Shared helpers for tests: fixture paths, gold tensors, scratch directories.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::test {

// A free TCP port on 127.0.0.1 (for servers the tests start).
inline int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

inline std::string fixture(const std::string& rel) { return std::string(G4_FIXTURES) + "/" + rel; }
inline std::string model_dir(const std::string& name) {
  return name == "brown-mini" ? std::string(G4_MODELS) + "/brown-mini" : fixture(name);
}

// Gold tensors of a fixture's gold.safetensors, by name.
struct Gold {
  SafetensorsFile file;
  explicit Gold(const std::string& path) : file(read_safetensors(path)) {}
  const TensorView& t(const std::string& name) const {
    for (const auto& v : file.tensors)
      if (v.name == name) return v;
    throw std::runtime_error("gold tensor missing: " + name);
  }
  std::vector<float> f32(const std::string& name) const { return tensor_to_f32(t(name)); }
  std::vector<int32_t> i32(const std::string& name) const { return tensor_to_i32(t(name)); }
};

// A fresh directory under the build tree's temp area, removed at scope exit.
struct ScratchDir {
  std::filesystem::path path;
  ScratchDir() {
    path = std::filesystem::temp_directory_path() /
           ("g4test-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
            std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() { std::filesystem::remove_all(path); }
  std::string str(const std::string& rel = "") const { return rel.empty() ? path.string() : (path / rel).string(); }
};

// The message of the g4::Error that f throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Copies an HF fixture into `dir`, re-writing model.safetensors through `edit` (which may
// change, drop or add tensors) and config.json through `edit_config`.
inline void write_variant(const std::string& src, const std::string& dir,
                          const std::function<void(std::vector<SafetensorsOut>&)>& edit,
                          const std::function<void(json&)>& edit_config = nullptr) {
  auto f = read_safetensors(src + "/model.safetensors");
  std::vector<SafetensorsOut> out;
  for (const auto& t : f.tensors)
    out.push_back({t.name, std::string(dtype_name(t.dtype)), t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  if (edit) edit(out);
  write_safetensors(dir + "/model.safetensors", out, {{"format", "pt"}});
  json cfg = json::parse(read_text_file(src + "/config.json"));
  if (edit_config) edit_config(cfg);
  std::ofstream(dir + "/config.json") << cfg.dump(2);
}

}  // namespace g4::test
