// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace g4 {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  ~Progress();
  void update(int64_t done, const std::string& status = "");
  void finish();
  static bool enabled();

 private:
  std::string label_;
  int64_t total_;
  bool active_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace g4
