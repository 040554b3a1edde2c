// Vocabulary-parallel LinearCrossEntropy over MPI, checked against one process.
//
// The output layer W (C×d) and its bias are split by rows: rank r holds the
// classes [offset_r, offset_r + C_r) (uneven slices, not multiples of the
// block size). Every rank holds the whole batch H (d×N) and the labels. The
// header needs no MPI: the caller gives it two in-place all-reduces, a max
// of the per-column maxima and a sum of the per-column sums; the loss then
// comes out the same on every rank, each rank gets its rows of grad_W and
// grad_b, and its part of grad_H, which the caller sums (one more
// MPI_Allreduce, as a Megatron-style tensor-parallel head does).
//
// Each rank also evaluates the whole head alone and compares, in double:
// loss, grad_H and its slice of grad_W and grad_b must agree to 1e-12
// (relative to each gradient's largest entry), or the program exits with 1.
// Several option sets: plain, class weights + label smoothing + log²Z
// penalty + sample weights with ignored samples, and Reduction::Sum.
//
// Run from examples/:  mpirun -np 2 <build>/examples/example_vocab_parallel [--quick]
#include <mpi.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <losskit/linear_cross_entropy.hpp>
#include <random>

namespace {

Eigen::MatrixXd normal(Eigen::Index rows, Eigen::Index cols, double stddev, std::mt19937_64& gen) {
  std::normal_distribution<double> d(0.0, stddev);
  Eigen::MatrixXd m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = d(gen);
  return m;
}

double scaled_err(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  const double scale = std::max(b.cwiseAbs().maxCoeff(), 1e-300);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;

  const Eigen::Index classes = quick ? 5003 : 50021, d = 64, n = quick ? 96 : 512;
  std::mt19937_64 gen(7);  // the same data on every rank
  const Eigen::MatrixXd h = normal(d, n, 1.0, gen), w = normal(classes, d, 0.3, gen);
  const Eigen::VectorXd b = normal(classes, 1, 0.1, gen);
  const Eigen::VectorXd class_weights = normal(classes, 1, 0.3, gen).cwiseAbs().array() + 0.2;
  const Eigen::VectorXd sample_weights = normal(n, 1, 1.0, gen).cwiseAbs();
  std::uniform_int_distribution<int> label(0, int(classes) - 1);
  Eigen::VectorXi y(n);
  for (Eigen::Index i = 0; i < n; ++i) y(i) = i % 11 == 0 ? -100 : label(gen);

  // Uneven slices: rank r gets a share proportional to r + 1.
  const Eigen::Index weights_total = Eigen::Index(size) * (size + 1) / 2;
  Eigen::Index offset = 0;
  for (int r = 0; r < rank; ++r) offset += classes * (r + 1) / weights_total;
  const Eigen::Index local = rank == size - 1 ? classes - offset : classes * (rank + 1) / weights_total;

  double worst = 0;
  for (int variant = 0; variant < 3; ++variant) {
    losskit::LinearCrossEntropy<double> whole;
    whole.block_size = 700;
    if (variant >= 1) {
      whole.class_weights = class_weights;
      whole.label_smoothing = 0.1;
      whole.z_penalty = 1e-3;
    }
    if (variant == 2) whole.reduction = losskit::Reduction::Sum;
    const bool weighted = variant >= 1;

    Eigen::MatrixXd gh_ref, gw_ref;
    Eigen::VectorXd gb_ref;
    const double loss_ref = weighted ? whole.value_and_gradient(h, w, b, y, sample_weights, gh_ref, gw_ref, gb_ref)
                                     : whole.value_and_gradient(h, w, b, y, gh_ref, gw_ref, gb_ref);

    losskit::LinearCrossEntropy<double> slice = whole;
    slice.class_offset = offset;
    slice.total_classes = classes;
    slice.all_reduce_max = [](double* v, Eigen::Index k) {
      MPI_Allreduce(MPI_IN_PLACE, v, int(k), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    };
    slice.all_reduce_sum = [](double* v, Eigen::Index k) {
      MPI_Allreduce(MPI_IN_PLACE, v, int(k), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    };
    const Eigen::MatrixXd w_mine = w.middleRows(offset, local);
    const Eigen::VectorXd b_mine = b.segment(offset, local);
    Eigen::MatrixXd gh, gw;
    Eigen::VectorXd gb;
    const double t0 = MPI_Wtime();
    const double loss = weighted ? slice.value_and_gradient(h, w_mine, b_mine, y, sample_weights, gh, gw, gb)
                                 : slice.value_and_gradient(h, w_mine, b_mine, y, gh, gw, gb);
    MPI_Allreduce(MPI_IN_PLACE, gh.data(), int(gh.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    const double seconds = MPI_Wtime() - t0;

    const double e_loss = std::abs(loss - loss_ref) / std::abs(loss_ref);
    const double e_h = scaled_err(gh, gh_ref);
    const double e_w = scaled_err(gw, gw_ref.middleRows(offset, local));
    const double e_b = scaled_err(gb, gb_ref.segment(offset, local));
    double e = std::max({e_loss, e_h, e_w, e_b});
    MPI_Allreduce(MPI_IN_PLACE, &e, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0)
      std::printf("variant %d (%s): loss %.15g (one process %.15g), worst relative error over %d ranks %.3g "
                  "(loss %.2g, grad_H %.2g, grad_W %.2g, grad_b %.2g on rank 0), %.3f s\n",
                  variant, variant == 0 ? "plain" : variant == 1 ? "all options, Mean" : "all options, Sum", loss,
                  loss_ref, size, e, e_loss, e_h, e_w, e_b, seconds);
    worst = std::max(worst, e);
  }
  const bool ok = worst <= 1e-12;
  if (rank == 0)
    std::printf("C = %ld classes over %d ranks (rank 0: classes %ld..%ld), d = %ld, N = %ld: %s (worst %.3g, tolerance 1e-12)\n",
                long(classes), size, long(offset), long(offset + local), long(d), long(n), ok ? "agree" : "DISAGREE",
                worst);
  MPI_Finalize();
  return ok ? 0 : 1;
}
