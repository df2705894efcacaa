// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace g4 {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void update(int64_t done, const std::string& status = "");
  void finish();
  static bool enabled();
  // A (done, total) callback drawing a bar that is created on the first call; the bar is
  // cleared when the last copy of the callback goes away.
  static std::function<void(size_t, size_t)> callback(const std::string& label);

 private:
  std::string label_;
  int64_t total_;
  bool active_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace g4
