// The command line as users type it: the shared flags (declared once, src/cli/common_flags.h)
// accepted by every command that runs a model, with llama.cpp's spellings; the defaults
// `--help` prints agree between commands; bad inputs fail before any work or output; the
// flags g4 deliberately does not take say why; `serve -t 1` runs with one thread.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <regex>
#include <thread>

#include "kernels/fast.h"
#include "test_util.h"
#include "util/json.h"

namespace g4 {
namespace {

struct Out { int code; std::string out, err; double seconds; };

Out g4(const std::string& args, const test::ScratchDir& d) {
  const std::string o = d.str("stdout.txt"), e = d.str("stderr.txt");
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = std::system((std::string(G4_BINARY) + " " + args + " > " + o + " 2> " + e + " < /dev/null").c_str());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text_file(o), read_text_file(e), s};
}

const std::string kModel = test::model_dir("brown-mini");
const std::string kText = test::fixture("brown-heldout.txt");

TEST(Cli, SharedFlagsAreAcceptedByEveryCommandThatRunsAModel) {
  test::ScratchDir d;
  // The same spellings everywhere, llama.cpp's among them (-ngl, -fa, --jinja, -ctk, -cnv).
  const std::string prompt = d.str("prompt.txt");
  std::ofstream(prompt) << "The Fulton County Grand Jury said Friday";
  const std::string fwd = " -t 1 --precision fast -ngl 0 -fa on --jinja";
  const std::string sampling = " --temp 0 --top-k 1 --top-p 0.9 --min-p 0.01 --repeat-penalty 1.1 --repeat-last-n 16 --seed 3";
  const std::vector<std::pair<std::string, std::string>> runs{
      {"run -m " + kModel + " -p 'The jury said' -n 4 -c 64 -ctk q8_0 --no-stats" + fwd + sampling, "The jury said"},
      {"run --model " + kModel + " --prompt 'The jury' --n-predict 4 --ctx-size 256 -cnv --no-stats" + fwd + sampling, ""},
      {"run -m " + kModel + " --file " + prompt + " -n 2 --threads 1 --no-stats -fa", "Grand Jury"},
      {"perplexity -m " + kModel + " -f " + kText + " -c 64 -b 32 --chunks 2 -ctk f16" + fwd, "Final estimate"},
      {"logits -m " + kModel + " -p 'The jury' -o " + d.str("l.safetensors") + " -t 1 --precision f32 -fa off", ""},
      {"compare -m " + kModel + " -m " + kModel + " -f " + kText + " -c 16 -t 1 --precision f32 -ngl 0 -fa --jinja", "logits"},
      {"bench -m " + kModel + " -p 8 -n 2 -r 1" + fwd, "tg2"},
      {"bench -m " + kModel + " -p 8 -n 2 -r 1 -d 4 --no-warmup" + fwd, "tg2 @ d4"},
      {"niah -m " + kModel + " -f " + kText + " --lengths 64 --depths 0.5 -n 2" + fwd, ""},
      {"ladder -m " + kModel + " -f " + kText + " -c 16 --chunks 1 -t 1", "fast"},
      {"inspect -m " + kModel + " -t 1", "gemma"},
  };
  for (const auto& [args, want] : runs) {
    const Out r = g4(args, d);
    std::printf("%5.2f s rc %d  g4 %s\n", r.seconds, r.code, args.c_str());
    EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
    EXPECT_NE(r.out.find(want), std::string::npos) << args << "\n" << r.out;
  }
}

// How far ahead decode's weight stream prefetches is the CPU vendor's measured best, or
// G4_DECODE_PREFETCH's; `bench --json` reports the distance in effect (0: the kernels this CPU
// runs have no such stream). A malformed value is named on stderr and the default runs.
TEST(Cli, DecodePrefetchDistanceIsReportedAndOverridable) {
  test::ScratchDir d;
  auto bench = [&](const char* env) {
    if (env) ::setenv("G4_DECODE_PREFETCH", env, 1);
    const Out r = g4("bench -m " + kModel + " -p 0 -n 2 -r 1 -t 1 --no-warmup --json", d);
    ::unsetenv("G4_DECODE_PREFETCH");
    EXPECT_EQ(r.code, 0) << r.err;
    const json j = json::parse(r.out, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("decode_prefetch_bytes")) << r.out;
    const int pf = j.is_object() ? j.value("decode_prefetch_bytes", -1) : -1;
    std::printf("G4_DECODE_PREFETCH=%s: %d B\n%s", env ? env : "(unset)", pf, r.err.c_str());
    return std::make_pair(pf, r.err);
  };
  const std::string isa = fast_kernel_isa();
  const bool packed = isa == "avx512vnni" || isa == "amx";
  const int dflt = bench(nullptr).first;
  if (packed) {
    EXPECT_TRUE(dflt == 2048 || dflt == 3072) << dflt;
  } else {
    EXPECT_EQ(dflt, 0);
  }
  EXPECT_EQ(bench("4096").first, packed ? 4096 : 0);
  const auto [bad, err] = bench("100");
  EXPECT_EQ(bad, dflt);
#if defined(__x86_64__)
  EXPECT_NE(err.find("G4_DECODE_PREFETCH='100' ignored: expected a multiple of 64"), std::string::npos) << err;
#endif
}

// Decode's groups per work item (1 or 2 by CPU, G4_DECODE_GROUPS) change no bits: brown-mini's
// perplexity with one token per step, every matmul a decode, is the same number either way.
TEST(Cli, DecodeGroupsChangeNoBits) {
  test::ScratchDir d;
  for (const char* file : {"gguf/brown-mini-Q4_0.gguf", "gguf/brown-mini-Q6_K.gguf"}) {
    std::vector<double> ppl;
    for (const char* env : {"1", "2", "3"}) {
      ::setenv("G4_DECODE_GROUPS", env, 1);
      const Out r = g4("perplexity -m " + test::fixture(file) + " -f " + kText + " -c 32 -b 1 --chunks 2 -t 2 --json", d);
      ::unsetenv("G4_DECODE_GROUPS");
      ASSERT_EQ(r.code, 0) << r.err;
      const json j = json::parse(r.out, nullptr, false);
      ASSERT_TRUE(j.is_object() && j.contains("ppl")) << r.out;
      ppl.push_back(j["ppl"].get<double>());
      std::printf("%s G4_DECODE_GROUPS=%s: PPL %.17g\n", file, env, ppl.back());
#if defined(__x86_64__)
      if (std::string(env) == "3" && (fast_kernel_isa() == "avx512vnni" || fast_kernel_isa() == "amx")) {
        EXPECT_NE(r.err.find("G4_DECODE_GROUPS='3' ignored: expected 1 or 2"), std::string::npos) << r.err;
      }
#endif
    }
    EXPECT_EQ(ppl[0], ppl[1]) << file;
    EXPECT_EQ(ppl[0], ppl[2]) << file;
  }
}

// `g4 CMD --help`: flag name -> its help line (with the default it prints).
std::map<std::string, std::string> help_of(const std::string& cmd, const test::ScratchDir& d) {
  const Out r = g4(cmd + " --help", d);
  EXPECT_EQ(r.code, 0) << cmd;
  std::map<std::string, std::string> m;
  std::string flag;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    std::smatch s;
    static const std::regex opt(R"(^  (-[-\w]+(?:,-[-\w]+)*)\s*(\S.*)?$)");
    if (std::regex_search(line, s, opt)) {
      flag = s[1];
      m[flag] = s[2];
    } else if (!flag.empty() && line.rfind("      ", 0) == 0) {
      m[flag] += ' ';
      m[flag] += line.substr(line.find_first_not_of(' '));
    }
  }
  return m;
}

TEST(Cli, HelpPrintsTheSameDefaultsOnEveryCommand) {
  test::ScratchDir d;
  const std::vector<std::string> cmds{"run", "serve", "perplexity", "logits", "compare", "forensics", "grade", "bench",
                                      "ladder", "divergence", "kv-study", "niah", "quantize", "inspect", "synth"};
  std::map<std::string, std::map<std::string, std::string>> help;
  for (const auto& c : cmds) help[c] = help_of(c, d);
  // flag -> the commands that must have it; their help lines must be identical.
  const std::vector<std::pair<std::string, std::vector<std::string>>> same{
      {"-t,--threads", cmds},
      {"-m,--model", {"perplexity", "logits", "forensics", "grade", "bench", "ladder", "divergence", "kv-study", "niah", "quantize", "inspect"}},
      {"-m,--model(bundled)", {"run", "serve"}},
      {"-c,--ctx-size", {"perplexity", "compare", "forensics", "grade", "ladder"}},
      {"-c,--ctx-size,--ctx", {"run", "serve"}},
      {"-b,--batch-size", {"perplexity", "serve"}},
      {"--precision(fast)", {"run", "serve", "perplexity", "bench", "niah", "kv-study"}},
      {"--precision(f64)", {"logits", "compare", "divergence"}},
      {"--device", {"run", "serve", "perplexity", "logits", "compare", "bench", "divergence", "kv-study", "niah"}},
      {"--n-gpu-layers", {"run", "serve", "perplexity", "logits", "compare", "bench", "divergence", "kv-study", "niah"}},
      {"--flash-attn", {"run", "serve", "perplexity", "logits", "compare", "bench", "divergence", "kv-study", "niah"}},
      {"--jinja", {"run", "serve", "perplexity", "logits", "compare", "bench", "divergence", "kv-study", "niah"}},
      {"--cache-type-k", {"run", "perplexity", "logits", "divergence", "niah"}},
  };
  int checked = 0;
  for (const auto& [key, users] : same) {
    const std::string flag = key.substr(0, key.find('('));
    std::string first;
    for (const auto& c : users) {
      ASSERT_TRUE(help[c].count(flag)) << c << " lacks " << flag;
      const std::string& h = help[c][flag];
      if (first.empty()) first = h;
      EXPECT_EQ(h, first) << flag << " differs between " << users[0] << " and " << c;
      ++checked;
    }
    std::printf("%-22s on %2zu commands: %s\n", key.c_str(), users.size(), first.c_str());
  }
  // The defaults are printed.
  EXPECT_NE(help["run"]["-t,--threads"].find("default 0 = all cores"), std::string::npos);
  EXPECT_NE(help["perplexity"]["-c,--ctx-size"].find("default 512"), std::string::npos);
  EXPECT_NE(help["run"]["-n,--n-predict"].find("default 256"), std::string::npos);
  EXPECT_NE(help["perplexity"]["--precision"].find("default fast"), std::string::npos);
  EXPECT_NE(help["logits"]["--precision"].find("default f64, as this command computes the reference"), std::string::npos);
  EXPECT_NE(help["serve"]["-b,--batch-size"].find("default 512"), std::string::npos);
  for (const char* s : {"--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "-s,--seed", "--chat,--conversation"})
    EXPECT_TRUE(help["run"].count(s)) << "run lacks " << s;
  std::printf("%d help lines compared\n", checked);
}

TEST(Cli, BadInputsFailBeforeAnyWorkOrOutput) {
  test::ScratchDir d;
  // A directory that is not a model: loading it fails with exit 1. An exit 2 naming the
  // real problem shows the check ran before the model was loaded.
  const std::string bad_model = d.str("not-a-model");
  std::filesystem::create_directories(bad_model);
  const std::string huge = d.str("huge.txt");
  {
    std::ofstream f(huge);
    for (int i = 0; i < 400; ++i) f << "The jury said it did find that many of the city's voters were not informed. ";
  }
  struct Case { std::string args; int code; std::string err; };
  const std::vector<Case> cases{
      {"perplexity -m " + bad_model, 2, "-f FILE"},
      {"perplexity -m " + bad_model + " -f " + d.str("nope.txt"), 2, "does not exist"},
      {"perplexity -m " + bad_model + " -f " + kText + " --kl-divergence", 2, "--kl-divergence-base"},
      {"perplexity -m " + bad_model + " -f " + kText + " -c 0", 2, "-c"},
      {"run -m " + bad_model + " -f " + d.str("nope.txt"), 2, "does not exist"},
      {"run -m " + bad_model, 2, "-p TEXT or -f FILE"},
      {"run -m " + bad_model + " -p x --system hi", 2, "--chat"},
      {"run -m " + bad_model + " -p x -t -1", 2, "--threads"},
      {"run -m " + bad_model + " -p x -fa sometimes", 2, "--flash-attn"},
      {"run -m " + d.str("missing-model") + " -p x", 2, "does not exist"},
      {"logits -m " + bad_model + " -o " + d.str("o.st"), 2, "no tokens"},
      {"compare -m " + bad_model + " -m " + bad_model, 2, "-f FILE"},
      {"ladder -m " + bad_model, 2, "-f FILE"},
      {"forensics -m " + bad_model + " --ref " + bad_model + " --restore", 2, "-f FILE"},
      {"grade -m " + bad_model + " --ref " + bad_model, 2, "--file"},
      {"serve -m " + bad_model + " -b 0", 2, "--batch-size"},
      // llama.cpp flags g4 deliberately does not take: why, exit 2.
      {"run -p x --mlock", 2, "does not lock the model"},
      {"serve --numa distribute", 2, "numactl"},
      {"run -p x -sm row", 2, "one device"},
      {"perplexity -m " + kModel + " -f " + kText + " -ub 256", 2, "one batch size"},
      {"run -hf google/gemma-4-E2B-it -p x", 2, "never touches the network"},
      // The prompt is checked against the context before anything is printed.
      {"run -m " + kModel + " -f " + huge + " -c 128 --no-stats", 1, "the prompt has"},
  };
  for (const auto& c : cases) {
    const Out r = g4(c.args, d);
    std::printf("rc %d %5.2f s  g4 %s\n    %s", r.code, r.seconds, c.args.c_str(), r.err.c_str());
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.err), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.out, "") << c.args << ": printed before failing";
  }
}

// -t reaches the scheduler's thread, where the forward runs (OpenMP's setting is per
// thread, so the main thread's omp_set_num_threads alone would not).
TEST(Cli, ServeTakesThreadsAndCacheTypes) {
  test::ScratchDir d;
  const int port = test::free_port();
  const std::string log = d.str("serve.log");
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    ::setenv("OMP_NUM_THREADS", "2", 1);  // -t must win over the environment
    const std::string p = std::to_string(port);
    ::execl(G4_BINARY, G4_BINARY, "serve", "-m", kModel.c_str(), "--port", p.c_str(), "-t", "1", "-ctk", "q8_0",
            "--parallel", "2", nullptr);
    _exit(127);
  }
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);
  bool ready = false;
  for (int i = 0; i < 400 && !ready; ++i) {
    if (auto r = c.Get("/health"); r && r->status == 200) ready = true;
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(ready) << read_text_file(log);
  auto r = c.Post("/v1/completions", R"({"prompt": "The jury said", "max_tokens": 6, "temperature": 0})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  const std::string text = j["choices"][0]["text"];
  EXPECT_FALSE(text.empty());
  auto p = c.Get("/props");
  ASSERT_TRUE(p);
  const json props = json::parse(p->body);
  std::printf("serve -t 1 -ctk q8_0: \"%s\"; /props threads %d, cache_type_k %s\n", text.c_str(), props["threads"].get<int>(),
              props["cache_type_k"].get<std::string>().c_str());
  EXPECT_EQ(props["threads"], 1);
  EXPECT_EQ(props["cache_type_k"], "q8_0");
  ::kill(pid, SIGTERM);
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << read_text_file(log);
}

}  // namespace
}  // namespace g4
