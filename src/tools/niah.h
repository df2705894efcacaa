// Needle in a haystack: a fact hidden at chosen depths of filler text of chosen lengths,
// then a question about it; retrieval scored by the greedy answer and by the
// log-probability of the answer. Prompts are built from token ids, so every prompt has
// exactly the requested length and the needle sits at a known token position.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/session.h"
#include "tokenizer/tokenizer.h"

namespace g4 {

struct NiahOptions {
  std::vector<int64_t> lengths{256, 512, 1024};  // prompt lengths in tokens
  std::vector<double> depths{0, 0.25, 0.5, 0.75, 1.0};  // needle position, fraction of the haystack
  std::string needle = "The secret number is {answer}.";  // {answer} is replaced by the answer
  std::string question = "What is the secret number?";
  std::string answer;  // empty: a number drawn from `seed`
  uint64_t seed = 1;
  int max_tokens = 16;
  int chat = -1;  // 1: Gemma 4 chat template, 0: raw text, -1: the template if the tokenizer has it
  ForwardOptions fwd{Precision::Fast};
};

// One prompt: ids, where the needle's tokens are, and the depth it ended up at (the
// needle goes to the sentence boundary of the filler nearest the requested depth).
struct NiahPrompt {
  std::vector<int32_t> ids;
  int64_t haystack_begin = 0, haystack_len = 0;  // the filler + needle span of ids
  int64_t needle_pos = 0, needle_len = 0;
  double depth = 0;  // (needle_pos - haystack_begin) / (haystack_len - needle_len)
};

// The pieces of every prompt, tokenized once.
struct NiahPieces {
  std::vector<int32_t> prefix, suffix;  // BOS (+ chat turn opening) / chat turn closing + generation prompt
  std::vector<int32_t> filler, needle, question;
  std::vector<char> boundary;  // filler[i] starts a sentence
};
NiahPieces niah_pieces(const Tokenizer& tok, const std::string& filler_text, const std::string& needle,
                       const std::string& question, bool chat);
NiahPrompt build_niah_prompt(const NiahPieces& p, int64_t length, double depth);

// The answer appears in the output (case-insensitive, as a whole word or number).
bool niah_hit(const std::string& output, const std::string& answer);

struct NiahCell {
  int64_t length = 0, tokens = 0, needle_pos = 0;
  double depth = 0, depth_actual = 0;
  bool hit = false;
  double answer_logprob = 0;  // sum over the answer's tokens, teacher-forced after the prompt
  std::string output;
};
struct NiahResult {
  std::string answer;
  int answer_tokens = 0;
  bool chat = false;
  std::vector<NiahCell> cells;  // lengths x depths, row-major by length
};

NiahResult run_niah(const Model& m, const Tokenizer& tok, const std::string& filler_text, const NiahOptions& opt);
std::string format_niah(const NiahResult& r, const std::string& model);
// The depth x length grid as a self-contained SVG (hit/miss and answer log-prob).
std::string niah_svg(const NiahResult& r, const std::string& model);

}  // namespace g4
