#pragma once
// Sampling: candidates, the seeded generator, the stages and the compile-time chain.
#include <lmtk/sample/candidate.hpp>
#include <lmtk/sample/chain.hpp>
#include <lmtk/sample/rng.hpp>
#include <lmtk/sample/stages.hpp>
