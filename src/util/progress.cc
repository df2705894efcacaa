#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace g4 {

bool Progress::enabled() { return isatty(STDERR_FILENO) != 0; }

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), active_(enabled()), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done, const std::string& status) {
  if (!active_ || total_ <= 0) return;
  constexpr int kWidth = 30;
  const double frac = static_cast<double>(done) / static_cast<double>(total_);
  const int fill = static_cast<int>(frac * kWidth);
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = done > 0 ? elapsed * (static_cast<double>(total_ - done) / static_cast<double>(done)) : 0;
  std::string bar(static_cast<size_t>(fill), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %ld/%ld  %.1f/s  %.0fs elapsed, ~%.0fs left  %s\x1b[K", label_.c_str(), bar.c_str(),
               static_cast<long>(done), static_cast<long>(total_), elapsed > 0 ? done / elapsed : 0.0, elapsed, eta,
               status.c_str());
  std::fflush(stderr);
}

std::function<void(size_t, size_t)> Progress::callback(const std::string& label) {
  auto bar = std::make_shared<std::unique_ptr<Progress>>();
  return [bar, label](size_t done, size_t total) {
    if (!*bar) *bar = std::make_unique<Progress>(label, static_cast<int64_t>(total));
    (*bar)->update(static_cast<int64_t>(done));
    if (done == total) (*bar)->finish();
  };
}

void Progress::finish() {
  if (!active_) return;
  std::fprintf(stderr, "\r\x1b[K");
  std::fflush(stderr);
  active_ = false;
}

}  // namespace g4
