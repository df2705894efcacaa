// Strict JSON parsing for untrusted files: duplicate keys and absurd nesting are
// errors (nlohmann would silently keep the last duplicate).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace g4 {

using json = nlohmann::json;

// `what` names the source in error messages (file path, "HTTP body", ...).
json parse_json_strict(std::string_view text, const std::string& what);

}  // namespace g4
