#pragma once
// How the GPU stores routed-expert weights (model/mxfp4.h describes MXFP4).

#include <string>

namespace ultraserve::gpu {

enum class ExpertFormat { bf16, mxfp4 };

inline std::string to_string(ExpertFormat f) { return f == ExpertFormat::mxfp4 ? "mxfp4" : "bf16"; }

}  // namespace ultraserve::gpu
