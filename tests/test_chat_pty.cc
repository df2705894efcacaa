// `g4 run --chat` driven through a pseudo-terminal, as a person would: Ctrl-C stops an
// answer and the chat goes on, chat commands, multi-line input, the context shift when
// the context is full, and Ctrl-C at the prompt ends the program.
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <string>

#include "test_util.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4 {
namespace {

// A child process on the slave side of a pty; `screen` is everything it printed.
class Pty {
 public:
  explicit Pty(const std::string& args) {
    pid_ = forkpty(&fd_, nullptr, nullptr, nullptr);
    if (pid_ == 0) {
      execl("/bin/sh", "sh", "-c", ("exec " + std::string(G4_BINARY) + " " + args).c_str(), nullptr);
      _exit(127);
    }
  }
  ~Pty() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) close(fd_);
  }
  void send(const std::string& s) { ASSERT_EQ(write(fd_, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
  // Reads until `what` appears after offset `from` of the screen; false on timeout or EOF.
  bool wait_for(const std::string& what, size_t from = 0, double seconds = 60) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (screen.find(what, from) == std::string::npos) {
      if (std::chrono::steady_clock::now() > end || !pump(100)) return false;
    }
    return true;
  }
  // Reads whatever arrives within ms milliseconds; false at EOF.
  bool pump(int ms) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return true;
    char buf[4096];
    const ssize_t n = read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    screen.append(buf, static_cast<size_t>(n));
    return true;
  }
  // The exit status once the child ends (-1 on timeout).
  int wait_exit(double seconds = 20) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    for (;;) {
      pump(50);
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      if (std::chrono::steady_clock::now() > end) return -1;
    }
  }
  std::string screen;

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  bool exited_ = false;
};

TEST(ChatPty, CtrlCStopsTheAnswerCommandsWorkAndCtrlCAtThePromptExits) {
  test::ScratchDir d;
  Pty p("run --chat -m " + test::model_dir("brown-mini") + " -n -1 --ignore-eos --temp 0 -t 1 --no-stats -c 4096");
  ASSERT_TRUE(p.wait_for("> ")) << p.screen;
  p.send("The jury said\r");
  // Let the answer stream for a while, then interrupt it.
  size_t mark = p.screen.size();
  ASSERT_TRUE(p.wait_for("The jury said", mark - std::min<size_t>(mark, 2)));
  mark = p.screen.size();
  const auto t0 = std::chrono::steady_clock::now();
  while (p.screen.size() < mark + 200 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) p.pump(50);
  ASSERT_GT(p.screen.size(), mark + 200) << "no answer streamed: " << p.screen;
  p.send("\x03");
  ASSERT_TRUE(p.wait_for("[stopped]", mark)) << p.screen.substr(mark);
  ASSERT_TRUE(p.wait_for("> ", p.screen.find("[stopped]", mark))) << "the chat did not come back to the prompt";

  // Commands and multi-line input.
  mark = p.screen.size();
  p.send("/think on\r");
  ASSERT_TRUE(p.wait_for("[thinking on]", mark)) << p.screen.substr(mark);
  p.send("/think off\r");
  ASSERT_TRUE(p.wait_for("[thinking off]", mark)) << p.screen.substr(mark);
  p.send("/save " + d.str("one.json") + "\r");
  ASSERT_TRUE(p.wait_for("[saved 2 messages", mark)) << p.screen.substr(mark);
  p.send("/clear\r");
  ASSERT_TRUE(p.wait_for("[conversation cleared]", mark)) << p.screen.substr(mark);
  p.send("/load " + d.str("one.json") + "\r");
  ASSERT_TRUE(p.wait_for("[loaded 2 messages", mark)) << p.screen.substr(mark);
  p.send("/load " + d.str("missing.json") + "\r");
  ASSERT_TRUE(p.wait_for("[error: ", mark)) << p.screen.substr(mark);
  p.send("/save " + d.str("two.json") + "\r");
  ASSERT_TRUE(p.wait_for("[saved 2 messages", p.screen.find("[error: ", mark))) << p.screen.substr(mark);
  const json saved = parse_json_strict(read_text_file(d.str("one.json")), "one.json");
  EXPECT_EQ(saved["messages"][0]["content"], "The jury said");
  EXPECT_EQ(saved["messages"][1]["role"], "assistant");
  EXPECT_GE(saved["messages"][1]["content"].get<std::string>().size(), 100u) << "the stopped answer is kept";

  mark = p.screen.size();
  p.send("first line \\\r");
  p.send("second line\r");
  ASSERT_TRUE(p.wait_for("second line", mark));
  const size_t echoed = p.screen.find("second line", mark) + 20;
  const auto t1 = std::chrono::steady_clock::now();
  while (p.screen.size() < echoed + 100 && std::chrono::steady_clock::now() - t1 < std::chrono::seconds(60)) p.pump(50);
  p.send("\x03");  // stop that answer too
  ASSERT_TRUE(p.wait_for("[stopped]", mark)) << p.screen.substr(mark);
  ASSERT_TRUE(p.wait_for("> ", p.screen.find("[stopped]", mark)));
  p.send("/save " + d.str("three.json") + "\r");
  ASSERT_TRUE(p.wait_for("[saved 4 messages", mark)) << p.screen.substr(mark);
  const json three = parse_json_strict(read_text_file(d.str("three.json")), "three.json");
  EXPECT_EQ(three["messages"][2]["content"], "first line \nsecond line");

  // Ctrl-C at the prompt ends the program (130, as a shell reports SIGINT).
  p.send("\x03");
  EXPECT_EQ(p.wait_exit(), 130) << p.screen.substr(mark);
  std::printf("[chat pty] %zu bytes of screen checked\n", p.screen.size());
}

TEST(ChatPty, AFullContextDropsTheOldestTurns) {
  Pty p("run --chat -m " + test::model_dir("brown-mini") + " -n 48 --ignore-eos --temp 0 -t 1 --no-stats -c 200");
  ASSERT_TRUE(p.wait_for("> ")) << p.screen;
  size_t dropped_at = std::string::npos;
  for (int turn = 0; turn < 6 && dropped_at == std::string::npos; ++turn) {
    const size_t mark = p.screen.size();
    p.send("Tell me about the jury and the election, turn " + std::to_string(turn) + ".\r");
    ASSERT_TRUE(p.wait_for("\r\n> ", mark + 10)) << p.screen.substr(mark);
    dropped_at = p.screen.find("[context full: dropped the oldest", mark);
  }
  ASSERT_NE(dropped_at, std::string::npos) << "no context shift in 6 turns of 48 tokens with -c 200: " << p.screen;
  // The chat keeps answering after the shift.
  const size_t mark = p.screen.size();
  p.send("And then?\r");
  ASSERT_TRUE(p.wait_for("\r\n> ", mark + 10)) << p.screen.substr(mark);
  EXPECT_EQ(p.screen.find("error", mark), std::string::npos) << p.screen.substr(mark);
  p.send("/exit\r");
  EXPECT_EQ(p.wait_exit(), 0);
}

}  // namespace
}  // namespace g4
