// `g4 inspect`: what a model file is, and whether g4 will run it.
#pragma once
#include <string>

#include "model/model.h"
#include "util/json.h"

namespace g4 {

json inspect_json(const Model& m);
std::string inspect_text(const Model& m);

}  // namespace g4
