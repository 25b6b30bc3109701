#pragma once
// Where users touch tensors (logits, log-probabilities, all-position logits for scoring), lmtk
// hands them xtensor expressions: views over lmtk's own buffers without a copy, or xtensor
// containers where the result is new. Users get xtensor's broadcasting, reductions and views
// (xt::argmax, xt::view(..., xt::range(...)), ...) instead of raw pointers and sizes. The hot
// paths inside lmtk stay on plain buffers; nothing here runs per token unless a user asks.
#include <array>
#include <cmath>
#include <cstddef>

#include <xtensor/xadapt.hpp>
#include <xtensor/xmath.hpp>
#include <xtensor/xsort.hpp>
#include <xtensor/xtensor.hpp>
#include <xtensor/xview.hpp>

namespace lmtk {

// n values at p, as a 1-D xtensor view (no copy; p must outlive it).
template <class T>
auto vector_view(T* p, std::size_t n) {
    return xt::adapt(p, n, xt::no_ownership(), std::array<std::size_t, 1>{n});
}

// rows x cols values at p, row-major, as a 2-D xtensor view (no copy; p must outlive it).
template <class T>
auto matrix_view(T* p, std::size_t rows, std::size_t cols) {
    return xt::adapt(p, rows * cols, xt::no_ownership(), std::array<std::size_t, 2>{rows, cols});
}

// log softmax over the last axis of a 1-D or 2-D expression of logits: each row minus its
// maximum, minus the log of the sum of exponentials (computed from the shifted values, so
// that no exp overflows). Returns a new container of the same shape.
template <class E>
auto log_softmax(const xt::xexpression<E>& logits) {
    const auto& x = logits.derived_cast();
    using value_type = typename E::value_type;
    constexpr std::size_t rank = xt::get_rank<E>::value;
    if constexpr (rank == 1) {
        const value_type mx = xt::amax(x)();
        const auto shifted = x - mx;
        const value_type lse = std::log(xt::sum(xt::exp(shifted))());
        return xt::xtensor<value_type, 1>(shifted - lse);
    } else {
        static_assert(rank == 2, "log_softmax: a vector or a matrix of logits");
        const auto mx = xt::eval(xt::amax(x, {1}));
        const auto shifted = xt::eval(x - xt::view(mx, xt::all(), xt::newaxis()));
        const auto lse = xt::eval(xt::log(xt::sum(xt::exp(shifted), {1})));
        return xt::xtensor<value_type, 2>(shifted - xt::view(lse, xt::all(), xt::newaxis()));
    }
}

}  // namespace lmtk
