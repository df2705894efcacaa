#include <cstdio>
#include <iostream>
#include <iterator>

#include "cli/commands.h"
#include "tools/token_input.h"
#include "util/error.h"
#include "util/json.h"
#include "util/mapped_file.h"

namespace g4::cli {
namespace {

// --tokenizer tokenizer.json, or the tokenizer of -m MODEL (HF directory or GGUF).
Tokenizer open_tokenizer(const std::string& tokenizer, const std::string& model) {
  if (!tokenizer.empty()) return Tokenizer::from_hf_file(tokenizer);
  if (model.empty()) fail("give --tokenizer tokenizer.json or -m MODEL");
  return load_tokenizer(open_model(model, LoadOptions{true}));
}

}  // namespace

void register_tokenize(CLI::App& app) {
  struct Opts { std::string tokenizer, model, text, file; bool json = false, no_bos = false, no_special = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Text -> token ids (Gemma BPE, exactly as HF tokenizers)");
  cmd->add_option("--tokenizer", o->tokenizer, "an HF tokenizer.json");
  cmd->add_option("-m,--model", o->model, "take the tokenizer of this model (HF directory or GGUF)");
  auto* t = cmd->add_option("--text", o->text, "text to tokenize");
  auto* f = cmd->add_option("-f,--file", o->file, "file to tokenize ('-' = stdin)");
  t->excludes(f);
  cmd->add_flag("--json", o->json, "print {\"ids\": [...], \"pieces\": [...]}");
  cmd->add_flag("--no-bos", o->no_bos, "do not prepend <bos>");
  cmd->add_flag("--no-parse-special", o->no_special, "treat special-token strings in the text as plain text (llama.cpp perplexity)");
  cmd->final_callback([o, t, f] {
    if (!*t && !*f) fail("give --text TEXT or -f FILE");
    Tokenizer tok = open_tokenizer(o->tokenizer, o->model);
    std::string text = o->text;
    if (*f) text = o->file == "-" ? std::string(std::istreambuf_iterator<char>(std::cin), {}) : read_text_file(o->file);
    const auto ids = tok.encode(text, !o->no_bos, !o->no_special);
    if (o->json) {
      json j{{"ids", ids}, {"pieces", json::array()}};
      for (auto id : ids) j["pieces"].push_back(tok.piece(id));
      std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      std::printf("%s\n", line.c_str());
    }
  });
}

void register_detokenize(CLI::App& app) {
  struct Opts { std::string tokenizer, model, ids; bool skip_special = false; };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("detokenize", "Token ids -> text");
  cmd->add_option("--tokenizer", o->tokenizer, "an HF tokenizer.json");
  cmd->add_option("-m,--model", o->model, "take the tokenizer of this model");
  cmd->add_option("--ids", o->ids, "comma-separated ids, or a JSON array / {\"ids\": [...]} file")->required();
  cmd->add_flag("--skip-special", o->skip_special, "drop special tokens (<bos>, <eos>, ...)");
  cmd->final_callback([o] {
    Tokenizer tok = open_tokenizer(o->tokenizer, o->model);
    const bool is_list = !o->ids.empty() && (std::isdigit(static_cast<unsigned char>(o->ids[0])) != 0);
    const auto ids = is_list ? parse_token_list(o->ids) : read_token_file(o->ids);
    std::fputs(tok.decode(ids, o->skip_special).c_str(), stdout);
    std::fputc('\n', stdout);
  });
}

}  // namespace g4::cli
