// Runs a libFuzzer harness without libFuzzer (any compiler): every file of the given
// corpus directories (the seeds and the regression inputs of crashes found), then random
// mutations of them for a few seconds. The harnesses trap on a broken property; an
// exception other than the expected error type escaping is a failure too.
// usage: fuzz_replay_<target> SECONDS DIR_OR_FILE...
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) { std::fprintf(stderr, "usage: %s SECONDS DIR_OR_FILE...\n", argv[0]); return 2; }
  const double seconds = std::atof(argv[1]);
  std::vector<std::string> inputs;
  for (int i = 2; i < argc; ++i) {
    namespace fs = std::filesystem;
    if (fs::is_directory(argv[i])) {
      for (const auto& e : fs::directory_iterator(argv[i]))
        if (e.is_regular_file()) inputs.push_back(e.path().string());
    } else if (fs::exists(argv[i])) {
      inputs.push_back(argv[i]);
    }
  }
  std::vector<std::string> corpus;
  for (const auto& p : inputs) {
    std::ifstream f(p, std::ios::binary);
    corpus.emplace_back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(corpus.back().data()), corpus.back().size());
  }
  if (corpus.empty()) corpus.emplace_back("{}");
  std::mt19937_64 rng(12345);
  const auto t0 = std::chrono::steady_clock::now();
  long runs = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
    std::string s = corpus[rng() % corpus.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < edits; ++k) {
      const size_t at = s.empty() ? 0 : rng() % s.size();
      switch (rng() % 4) {
        case 0: if (!s.empty()) s[at] = static_cast<char>(rng()); break;                       // flip a byte
        case 1: s.insert(at, 1, static_cast<char>(rng())); break;                              // insert
        case 2: if (!s.empty()) s.erase(at, 1 + rng() % 8); break;                             // delete
        case 3: if (!s.empty()) s.insert(at, s.substr(rng() % s.size(), 1 + rng() % 16)); break; // duplicate
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    ++runs;
  }
  std::printf("%zu corpus inputs replayed, %ld mutated inputs in %.0f s: no failure\n", corpus.size(), runs, seconds);
  return 0;
}
