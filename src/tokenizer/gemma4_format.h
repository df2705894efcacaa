// Gemma 4's tool syntax (protocols.md §f): values written as in its chat template
// (strings between <|"|> tokens, numbers/booleans bare, objects with bare keys), tool
// declarations for the system turn, and the parser for the model's
// `call:NAME{...}` tool calls.
#pragma once
#include <functional>
#include <string>
#include <string_view>

#include "util/json.h"

namespace g4 {

// emit(text, control): control pieces are special tokens (<|"|>), the rest is plain text.
using ChatEmit = std::function<void(const std::string&, bool)>;

// The template's format_argument: strings as <|"|>s<|"|>, objects with sorted keys
// (quoted with <|"|> only when escape_keys), arrays, bare numbers/booleans.
void gemma_value(const json& v, bool escape_keys, const ChatEmit& emit);
// `declaration:NAME{description:...,parameters:{...}}` for one OpenAI tool
// ({"type":"function","function":{name, description, parameters}}).
void gemma_tool_declaration(const json& tool, const ChatEmit& emit);
// `call:NAME{k:v,...}` for an assistant message's tool call (arguments as an object).
void gemma_tool_call(const std::string& name, const json& arguments, const ChatEmit& emit);
// `response:NAME{value:...}` (or the object's members) for a tool message.
void gemma_tool_response(const std::string& name, const json& response, const ChatEmit& emit);

// Parses the text between <|tool_call> and <tool_call|> (with <|"|> as its text), e.g.
// `call:get_weather{city:<|"|>Paris<|"|>,days:3}`, into name and JSON arguments.
// Returns false with `error` naming the byte offset and what was expected.
bool parse_gemma_call(std::string_view text, std::string& name, json& arguments, std::string& error);

}  // namespace g4
