#pragma once
// Kept for compatibility: FactoredOutputLayer's header was spherical.hpp before
// it was named for the concept it holds.
#include "factored_output_layer.hpp"
