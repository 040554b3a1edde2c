#pragma once
/// The interface between a spherical loss and the code that feeds it.
///
/// A loss is spherical (Vincent, de Brébisson & Bouthillier, NeurIPS 2015)
/// when, for one sample with outputs o ∈ R^D and target class c, it depends
/// on o only through
///     s = Σ_k o_k,   q = Σ_k o_k²,   o_c,
/// so ∂L/∂o_k = [k = c]·∂L/∂o_c + ∂L/∂s + 2·o_k·∂L/∂q. Whoever can compute
/// s, q and o_c without materialising o (e.g. a factored output layer, see
/// factored_output_layer.hpp) can then train with the loss in time independent of D.
namespace losskit {

/// Value of one sample's loss and its partial derivatives with respect to the
/// three spherical statistics (unreduced: multiply by the reduction factor).
template <class Scalar>
struct SphericalTerms {
  Scalar value = 0;        ///< L(s, q, o_c)
  Scalar d_sum = 0;        ///< ∂L/∂s
  Scalar d_sum_squares = 0;///< ∂L/∂q
  Scalar d_target = 0;     ///< ∂L/∂o_c, the explicit dependence only
};

}  // namespace losskit
