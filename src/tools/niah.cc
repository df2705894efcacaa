#include "tools/niah.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "runtime/generate.h"
#include "util/error.h"
#include "util/svg.h"

namespace g4 {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ends_sentence(const std::string& t) {
  size_t e = t.size();
  while (e > 0 && (t[e - 1] == ' ' || t[e - 1] == '\n')) --e;
  return e > 0 && (t[e - 1] == '.' || t[e - 1] == '!' || t[e - 1] == '?');
}

void append(std::vector<int32_t>& out, const std::vector<int32_t>& v) { out.insert(out.end(), v.begin(), v.end()); }

}  // namespace

NiahPieces niah_pieces(const Tokenizer& tok, const std::string& filler_text, const std::string& needle,
                       const std::string& question, bool chat) {
  NiahPieces p;
  if (chat) {
    // The template around an empty user message, split where the message goes.
    const ChatMessage empty{"user", ""};
    const std::vector<int32_t> t = encode_chat(tok, std::span(&empty, 1), {});
    const int32_t close = tok.find("<turn|>");
    const auto at = std::find(t.begin(), t.end(), close);
    if (close < 0 || at == t.end()) fail("niah --chat: the tokenizer has no <turn|> token (not a Gemma 4 chat tokenizer)");
    p.prefix.assign(t.begin(), at);
    p.suffix.assign(at, t.end());
    p.question = tok.encode_untrusted("\n\n" + question);
  } else {
    p.prefix = {tok.bos_id()};
    p.question = tok.encode_untrusted("\n\n" + question + "\nAnswer:");
  }
  p.filler = tok.encode_untrusted(filler_text);
  if (p.filler.size() < 16) fail("niah: the filler text has {} tokens; give a longer text (-f)", p.filler.size());
  p.needle = tok.encode_untrusted(" " + needle);
  p.boundary.resize(p.filler.size());
  p.boundary[0] = 1;
  for (size_t i = 1; i < p.filler.size(); ++i) p.boundary[i] = ends_sentence(tok.token_text(p.filler[i - 1]));
  return p;
}

NiahPrompt build_niah_prompt(const NiahPieces& p, int64_t length, double depth) {
  const auto fixed = static_cast<int64_t>(p.prefix.size() + p.question.size() + p.suffix.size());
  const auto nl = static_cast<int64_t>(p.needle.size());
  const int64_t F = length - fixed - nl;  // filler tokens
  if (F < 1) fail("niah: a prompt of {} tokens has no room for filler (template, needle and question take {})", length, fixed + nl);
  if (depth < 0 || depth > 1) fail("niah: depth {} is outside [0, 1]", depth);
  const auto S = static_cast<int64_t>(p.filler.size());
  // The filler repeats when the prompt is longer than the text; its start is a boundary.
  auto boundary = [&](int64_t a) { return a == 0 || a == F || p.boundary[static_cast<size_t>(a % S)]; };
  const auto want = static_cast<int64_t>(std::llround(depth * static_cast<double>(F)));
  int64_t a = want;
  for (int64_t d = 0; d <= F; ++d) {
    if (want - d >= 0 && boundary(want - d)) { a = want - d; break; }
    if (want + d <= F && boundary(want + d)) { a = want + d; break; }
  }
  NiahPrompt r;
  r.ids = p.prefix;
  r.haystack_begin = static_cast<int64_t>(r.ids.size());
  for (int64_t i = 0; i < a; ++i) r.ids.push_back(p.filler[static_cast<size_t>(i % S)]);
  r.needle_pos = static_cast<int64_t>(r.ids.size());
  r.needle_len = nl;
  append(r.ids, p.needle);
  for (int64_t i = a; i < F; ++i) r.ids.push_back(p.filler[static_cast<size_t>(i % S)]);
  r.haystack_len = F + nl;
  append(r.ids, p.question);
  append(r.ids, p.suffix);
  r.depth = static_cast<double>(a) / static_cast<double>(F);
  return r;
}

bool niah_hit(const std::string& output, const std::string& answer) {
  if (answer.empty()) return false;
  const std::string o = lower(output), a = lower(answer);
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t at = o.find(a); at != std::string::npos; at = o.find(a, at + 1)) {
    const bool left = at == 0 || !word(o[at - 1]);
    const bool right = at + a.size() == o.size() || !word(o[at + a.size()]);
    if (left && right) return true;
  }
  return false;
}

NiahResult run_niah(const Model& m, const Tokenizer& tok, const std::string& filler_text, const NiahOptions& opt) {
  if (opt.lengths.empty() || opt.depths.empty()) fail("niah: give at least one length and one depth");
  NiahResult r;
  r.answer = opt.answer;
  if (r.answer.empty()) {
    std::mt19937_64 rng(opt.seed);
    r.answer = std::to_string(1000 + rng() % 9000);
  }
  r.chat = opt.chat == 1 || (opt.chat == -1 && tok.find("<|turn>") >= 0 && tok.find("<turn|>") >= 0);
  std::string needle = opt.needle;
  if (const auto at = needle.find("{answer}"); at != std::string::npos) needle.replace(at, 8, r.answer);
  else if (needle.find(r.answer) == std::string::npos) fail("niah: the needle \"{}\" contains neither {{answer}} nor the answer", opt.needle);
  const NiahPieces pieces = niah_pieces(tok, filler_text, needle, opt.question, r.chat);
  // What a correct answer starts with: the bare answer in a model turn, after a space in raw text.
  const std::vector<int32_t> answer_ids = tok.encode_untrusted(r.chat ? r.answer : " " + r.answer);
  r.answer_tokens = static_cast<int>(answer_ids.size());

  const int64_t longest = *std::max_element(opt.lengths.begin(), opt.lengths.end());
  if (longest + opt.max_tokens > m.spec.max_ctx)
    fail("niah: prompts of {} tokens (+{} generated) exceed the model's context of {}", longest, opt.max_tokens, m.spec.max_ctx);
  ForwardOptions fo = opt.fwd;
  fo.n_ctx = longest + opt.max_tokens + static_cast<int64_t>(answer_ids.size());
  Session s(m, fo);
  GenerateOptions go;
  go.max_tokens = opt.max_tokens;
  go.sampling.temp = 0;
  go.stop_ids = tok.eog_ids();
  std::vector<int32_t> cached;  // what the session holds: consecutive prompts share their prefix
  const auto V = static_cast<size_t>(m.spec.vocab);
  for (int64_t len : opt.lengths)
    for (double depth : opt.depths) {
      const NiahPrompt p = build_niah_prompt(pieces, len, depth);
      NiahCell c;
      c.length = len;
      c.depth = depth;
      c.depth_actual = p.depth;
      c.tokens = static_cast<int64_t>(p.ids.size());
      c.needle_pos = p.needle_pos;
      const GenerateResult g = generate(s, cached, p.ids, tok, go);
      c.output = g.text;
      c.hit = niah_hit(g.text, r.answer);
      // The answer teacher-forced after the prompt: rewind to the prompt's last token.
      const auto P = static_cast<int64_t>(p.ids.size());
      if (!s.truncate(P - 1)) {
        s.reset();
        s.eval(std::span(p.ids).first(static_cast<size_t>(P - 1)), {false, -1});
      }
      std::vector<int32_t> forced{p.ids.back()};
      forced.insert(forced.end(), answer_ids.begin(), answer_ids.end() - 1);
      const EvalOutput out = s.eval(forced, {false, 0});
      for (size_t j = 0; j < answer_ids.size(); ++j) {
        const float* row = &out.logits[j * V];
        const double mx = *std::max_element(row, row + V);
        double z = 0;
        for (size_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
        c.answer_logprob += static_cast<double>(row[answer_ids[j]]) - mx - std::log(z);
      }
      cached.assign(p.ids.begin(), p.ids.end() - 1);
      cached.insert(cached.end(), forced.begin(), forced.end());
      r.cells.push_back(std::move(c));
    }
  return r;
}

std::string format_niah(const NiahResult& r, const std::string& model) {
  std::string o = fmt::format("needle in a haystack: {} ({}), answer \"{}\"\n", model, r.chat ? "chat template" : "raw text", r.answer);
  o += "cells: hit (+) or miss (-), then the answer's log-probability teacher-forced after the prompt\n\n";
  std::vector<double> depths;
  for (const auto& c : r.cells)
    if (std::find(depths.begin(), depths.end(), c.depth) == depths.end()) depths.push_back(c.depth);
  o += fmt::format("{:>8}", "length");
  for (double d : depths) o += fmt::format(" | {:>14}", fmt::format("depth {:.0f}%", 100 * d));
  o += "\n";
  int hits = 0;
  for (size_t i = 0; i < r.cells.size(); i += depths.size()) {
    o += fmt::format("{:>8}", r.cells[i].length);
    for (size_t j = 0; j < depths.size() && i + j < r.cells.size(); ++j) {
      const auto& c = r.cells[i + j];
      hits += c.hit;
      o += fmt::format(" | {} {:>12.3f}", c.hit ? '+' : '-', c.answer_logprob);
    }
    o += "\n";
  }
  o += fmt::format("\nretrieved {}/{}; needle at the sentence boundary nearest each depth (actual depths in --json)\n", hits,
                   r.cells.size());
  return o;
}

std::string niah_svg(const NiahResult& r, const std::string& model) {
  std::vector<double> depths;
  std::vector<int64_t> lengths;
  for (const auto& c : r.cells) {
    if (std::find(depths.begin(), depths.end(), c.depth) == depths.end()) depths.push_back(c.depth);
    if (std::find(lengths.begin(), lengths.end(), c.length) == lengths.end()) lengths.push_back(c.length);
  }
  svg::Heatmap h;
  h.css_class = "niah";
  h.title = "Needle in a haystack: " + model;
  h.subtitle = fmt::format("answer \"{}\" ({}); colour: the answer's mean per-token probability; + retrieved by greedy decoding",
                           r.answer, r.chat ? "chat template" : "raw text");
  h.x_label = "needle depth";
  h.y_label = "prompt tokens";
  h.cell_w = 90;
  h.cell_h = 40;
  for (double d : depths) h.col_labels.push_back(fmt::format("{:.0f}%", 100 * d));
  for (int64_t l : lengths) h.row_labels.push_back(std::to_string(l));
  const size_t n = lengths.size() * depths.size();
  h.values.assign(n, NAN);
  h.cell_text.resize(n);
  h.cell_tip.resize(n);
  for (const auto& c : r.cells) {
    const auto i = static_cast<size_t>(std::find(lengths.begin(), lengths.end(), c.length) - lengths.begin());
    const auto j = static_cast<size_t>(std::find(depths.begin(), depths.end(), c.depth) - depths.begin());
    const size_t k = i * depths.size() + j;
    h.values[k] = std::exp(c.answer_logprob / std::max(1, r.answer_tokens));
    h.cell_text[k] = fmt::format("{}{:.2f}", c.hit ? "+ " : "", c.answer_logprob);
    h.cell_tip[k] = fmt::format("length {} depth {:.3f} (needle at token {}): {}, log p = {:.3f}", c.length, c.depth_actual,
                                c.needle_pos, c.hit ? "retrieved" : "missed", c.answer_logprob);
  }
  h.colour = [](double p) { return 1 - p; };
  h.bar_high = "p = 0";
  h.bar_low = "p = 1";
  return svg::heatmap(h);
}

}  // namespace g4
