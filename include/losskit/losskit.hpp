#pragma once
/// Umbrella header: every losskit loss and the gradient checker.
#include "core.hpp"
#include "gradcheck.hpp"
#include "mse.hpp"
