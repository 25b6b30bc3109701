#pragma once
// Every tensor format lmtk knows, and the load-time dispatch over them.
#include <lmtk/quant/policy.hpp>
#include <lmtk/quant/f32.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/bf16.hpp>
#include <lmtk/quant/q8_0.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/dispatch.hpp>
