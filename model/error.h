#pragma once
// One exception type for everything a user can get wrong about a model: a missing file,
// malformed JSON, a lying safetensors header, shapes that disagree with the config.
// The message always names the file (or option) and the problem, so the CLI can print it as is.

#include <stdexcept>
#include <string>

namespace ultraserve {

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ultraserve
