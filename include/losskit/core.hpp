#pragma once
/// Everything in losskit/core/: Reduction, Error, checks, numerics, parallel loops.
#include "core/checks.hpp"
#include "core/error.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"
