#pragma once
/// Everything in losskit/core/: Reduction, Error, checks, numerics, parallel
/// loops, the Gaussian filter, the spherical-loss interface and the
/// thread-safe workspace pool.
#include "core/checks.hpp"
#include "core/error.hpp"
#include "core/gaussian_filter.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"
#include "core/spherical_terms.hpp"
#include "core/workspace.hpp"
