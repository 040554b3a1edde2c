#pragma once
// Build time only. FactoredOutputLayer's condition check instantiates Eigen's
// BDCSVD, and g++ 12 spends about 40 s per scalar on it in every translation
// unit that calls train_step (test_spherical at -O1: 205 s, and 102 s with
// the SVD swapped out). The test binary instantiates it once, in
// svd_instances.cpp; the translation units that include this header only
// declare it. The library itself is unchanged.
#include <Eigen/SVD>

extern template class Eigen::BDCSVD<Eigen::MatrixXd>;
extern template class Eigen::BDCSVD<Eigen::MatrixXf>;
