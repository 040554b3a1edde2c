// The one instantiation of Eigen's BDCSVD in losskit_tests (see svd_instances.hpp).
#include "svd_instances.hpp"

template class Eigen::BDCSVD<Eigen::MatrixXd>;
template class Eigen::BDCSVD<Eigen::MatrixXf>;
