#pragma once
/// Everything in losskit/core/: Reduction, Error, checks, numerics, parallel
/// loops, the Gaussian filter and the spherical-loss interface.
#include "core/checks.hpp"
#include "core/error.hpp"
#include "core/gaussian_filter.hpp"
#include "core/numerics.hpp"
#include "core/parallel.hpp"
#include "core/reduction.hpp"
#include "core/spherical_terms.hpp"
