#pragma once
// One vocabulary entry as it moves through a sampling chain.
#include <cstdint>
#include <type_traits>

namespace lmtk::sample {

struct candidate {
    std::int32_t id;  // token id
    float logit;      // current (possibly transformed) logit
    float p;          // probability; scratch for filters, the final distribution after a pick
};
static_assert(std::is_trivially_copyable_v<candidate>);
static_assert(sizeof(candidate) == 12, "candidate: padding");

}  // namespace lmtk::sample
