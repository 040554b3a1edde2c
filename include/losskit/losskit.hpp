#pragma once
/// Umbrella header: every losskit loss and the gradient checker.
#include "core.hpp"
#include "comp_sum.hpp"
#include "cross_entropy.hpp"
#include "cs_ib.hpp"
#include "factored_output_layer.hpp"
#include "gradcheck.hpp"
#include "ldr.hpp"
#include "linear_cross_entropy.hpp"
#include "mse.hpp"
#include "ssim.hpp"
#include "z_loss.hpp"
