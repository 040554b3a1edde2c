// Data-parallel training over MPI, checked against a single process.
//
// Every rank holds an equal share of the columns of every batch and its own
// copy of the model. Two ways a loss is split across ranks:
//
//  * Sum-decomposable losses (CrossEntropy, CompSum, LDR-KL, ALDR-KL, ZLoss,
//    MSE, SSIM over images): each rank evaluates its shard with
//    Reduction::Sum, the ranks sum those partial sums and the global
//    normaliser (the batch size, or Σ class weights of the labels for a
//    weighted CrossEntropy: ce.normaliser(labels)), every rank scales its
//    logit gradient by 1/normaliser, backpropagates its shard, and the
//    parameter gradients are summed with MPI_Allreduce. Trained on the UCI
//    digits with the one-hidden-layer network of digits_classification.cpp.
//  * CS-IB is a batch-level estimator (pairwise kernels over the whole batch):
//    the ranks all-gather the predictions ŷ and representations t of the batch,
//    each rank evaluates the full-batch loss and its gradient (identical on
//    every rank), keeps the gradient columns of its own shard, backpropagates
//    them, and the parameter gradients are summed. Trained on the diabetes
//    data with an encoder (x → t) and a decoder (t → ŷ).
//
// Every rank also runs the same steps on the full batch alone (Reduction::Mean,
// no MPI) and compares: the loss at every step, the gradient and the
// parameters after the last step must agree to round-off (relative 1e-10),
// or the program exits with status 1.
//
// Run from examples/:  mpirun -np 2 <build>/examples/example_data_parallel           (300 steps)
//                      mpirun -np 2 <build>/examples/example_data_parallel --quick   (CTest: 10 steps)
#include <mpi.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <losskit/comp_sum.hpp>
#include <losskit/cross_entropy.hpp>
#include <losskit/cs_ib.hpp>
#include <losskit/ldr.hpp>
#include <losskit/z_loss.hpp>
#include <string>
#include <vector>

#include "../example_io.hpp"
#include "../mlp.hpp"

namespace {

struct Comm {
  int rank = 0, size = 1;
  double sum(double local) const {
    double global = 0;
    MPI_Allreduce(&local, &global, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return global;
  }
  void sum_in_place(Eigen::VectorXd& v) const {
    MPI_Allreduce(MPI_IN_PLACE, v.data(), static_cast<int>(v.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  }
  // This rank's columns [begin, end) of a batch of n columns.
  Eigen::Index begin(Eigen::Index n) const { return n * rank / size; }
  Eigen::Index end(Eigen::Index n) const { return n * (rank + 1) / size; }
  // Concatenates every rank's columns (rank order) into `all` (rows×n).
  // Columns are contiguous in Eigen's column-major layout: one Allgatherv.
  void all_gather_columns(const Eigen::MatrixXd& mine, Eigen::Index n, Eigen::MatrixXd& all) const {
    all.resize(mine.rows(), n);
    std::vector<int> counts(static_cast<std::size_t>(size)), offsets(static_cast<std::size_t>(size));
    for (int r = 0; r < size; ++r) {
      offsets[std::size_t(r)] = static_cast<int>(mine.rows() * (n * r / size));
      counts[std::size_t(r)] = static_cast<int>(mine.rows() * (n * (r + 1) / size)) - offsets[std::size_t(r)];
    }
    MPI_Allgatherv(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), counts.data(),
                   offsets.data(), MPI_DOUBLE, MPI_COMM_WORLD);
  }
};

// How far the data-parallel run is from the single-process run.
struct Agreement {
  double loss = 0, gradient = 0, parameters = 0;  // largest relative differences
  void compare_loss(double parallel, double single) {
    loss = std::max(loss, std::abs(parallel - single) / std::max(std::abs(single), 1e-300));
  }
  static double relative(const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
    return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-300);
  }
  bool ok() const { return loss <= 1e-10 && gradient <= 1e-10 && parameters <= 1e-10; }
};

void print_row(const Comm& comm, const std::string& name, double loss, const Agreement& a, const char* extra) {
  if (comm.rank == 0)
    std::printf("%-26s %13.9f   %9.1e %9.1e %9.1e   %s\n", name.c_str(), loss, a.loss, a.gradient, a.parameters,
                extra);
}

double local_normaliser(const losskit::CrossEntropy<double>& ce, const Eigen::VectorXi& labels) {
  return ce.normaliser(labels);
}
template <class L>
double local_normaliser(const L&, const Eigen::VectorXi& labels) {
  return double(labels.size());
}

// Digits, samples as columns: pixels scaled to [0, 1] and the labels.
struct Digits {
  Eigen::MatrixXd x_train, x_test;
  Eigen::VectorXi y_train, y_test;
};

Digits load_digits() {
  const auto [train, test] = example_io::shuffle_split(example_io::read_table("data/digits.csv.gz"), 0.75, 0);
  return {train.topRows(64) / 16.0, test.topRows(64) / 16.0, train.row(64).transpose().cast<int>(),
          test.row(64).transpose().cast<int>()};
}

// Trains with a sum-decomposable loss on `comm.size` ranks and, alongside, on
// one process with the full batch; returns how far they drift apart.
template <class L>
Agreement sum_decomposable(const Comm& comm, L loss, const Digits& data, int steps, double lr, double& final_loss,
                           double& test_accuracy) {
  const Eigen::Index batch = 128, n = data.x_train.cols();
  const Eigen::Index begin = comm.begin(batch), mine = comm.end(batch) - begin;
  Mlp net(64, 64, 10, 1), single(64, 64, 10, 1);  // same initial weights
  L mean_loss = loss;                              // the single-process loss: Reduction::Mean
  loss.reduction = losskit::Reduction::Sum;
  Eigen::MatrixXd x(64, batch), grad_logits, grad_single;
  Eigen::VectorXi y(batch);
  Agreement agree;
  for (int step = 0; step < steps; ++step) {
    for (Eigen::Index j = 0; j < batch; ++j) {  // the global batch: a window of the shuffled data
      x.col(j) = data.x_train.col((step * batch + j) % n);
      y(j) = data.y_train((step * batch + j) % n);
    }
    // Data-parallel step: this rank sees only its columns.
    const Eigen::VectorXi y_mine = y.segment(begin, mine);
    const double local_sum = loss.value_and_gradient(net.forward(x.middleCols(begin, mine)), y_mine, grad_logits);
    const double normaliser = comm.sum(local_normaliser(loss, y_mine));
    final_loss = comm.sum(local_sum) / normaliser;
    grad_logits /= normaliser;
    net.backward(grad_logits);
    comm.sum_in_place(net.gradient());
    // The same step on one process with the whole batch.
    const double single_loss = mean_loss.value_and_gradient(single.forward(x), y, grad_single);
    single.backward(grad_single);
    agree.compare_loss(final_loss, single_loss);
    if (step == steps - 1) agree.gradient = Agreement::relative(net.gradient(), single.gradient());
    net.sgd_step(lr, 0.9);
    single.sgd_step(lr, 0.9);
  }
  agree.parameters = Agreement::relative(net.parameters(), single.parameters());
  const Eigen::MatrixXd& logits = net.forward(data.x_test);
  int correct = 0;
  for (Eigen::Index i = 0; i < logits.cols(); ++i) {
    Eigen::Index predicted;
    logits.col(i).maxCoeff(&predicted);
    correct += predicted == data.y_test(i);
  }
  test_accuracy = double(correct) / double(logits.cols());
  return agree;
}

// Diabetes, samples as columns, features and target standardised with the
// training set's mean and standard deviation.
struct Diabetes {
  Eigen::MatrixXd x_train, y_train;
};

Diabetes load_diabetes() {
  Eigen::MatrixXd table(442, 11);
  table << example_io::read_table("data/diabetes_data_raw.csv.gz"),
      example_io::read_table("data/diabetes_target.csv.gz");
  Eigen::MatrixXd train = example_io::shuffle_split(table, 0.75, 0).train;
  const Eigen::VectorXd mean = train.rowwise().mean();
  train.colwise() -= mean;
  const Eigen::VectorXd sd = (train.rowwise().squaredNorm() / double(train.cols())).cwiseSqrt();
  train = sd.cwiseInverse().asDiagonal() * train;
  return {train.topRows(10), train.bottomRows(1)};
}

// CS-IB across ranks: all-gather ŷ and t, evaluate the full batch everywhere,
// backpropagate this rank's gradient columns, sum the parameter gradients.
Agreement cs_ib(const Comm& comm, const Diabetes& data, int steps, double& final_loss) {
  const Eigen::Index batch = 128, n = data.x_train.cols();
  const Eigen::Index begin = comm.begin(batch), mine = comm.end(batch) - begin;
  Mlp encoder(10, 32, 4, 1), decoder(4, 16, 1, 2), encoder1(10, 32, 4, 1), decoder1(4, 16, 1, 2);
  losskit::CSIB<double> loss;
  loss.beta = 0.1;
  Eigen::MatrixXd x(10, batch), y(1, batch), t_all, yhat_all, grad_yhat, grad_t, grad_yhat1, grad_t1;
  Agreement agree;
  for (int step = 0; step < steps; ++step) {
    for (Eigen::Index j = 0; j < batch; ++j) {
      x.col(j) = data.x_train.col((step * batch + j) % n);
      y.col(j) = data.y_train.col((step * batch + j) % n);
    }
    // Data-parallel step.
    const Eigen::MatrixXd t_mine = encoder.forward(x.middleCols(begin, mine));
    const Eigen::MatrixXd yhat_mine = decoder.forward(t_mine);
    comm.all_gather_columns(t_mine, batch, t_all);
    comm.all_gather_columns(yhat_mine, batch, yhat_all);
    final_loss = loss.value_and_gradient(yhat_all, y, t_all, x, grad_yhat, grad_t);
    const Eigen::MatrixXd grad_t_mine =
        decoder.backward(grad_yhat.middleCols(begin, mine)) + grad_t.middleCols(begin, mine);
    encoder.backward(grad_t_mine);
    comm.sum_in_place(encoder.gradient());
    comm.sum_in_place(decoder.gradient());
    // Single process, whole batch.
    const Eigen::MatrixXd t1 = encoder1.forward(x);
    const double single_loss = loss.value_and_gradient(decoder1.forward(t1), y, t1, x, grad_yhat1, grad_t1);
    encoder1.backward(decoder1.backward(grad_yhat1) + grad_t1);
    agree.compare_loss(final_loss, single_loss);
    if (step == steps - 1)
      agree.gradient = std::max(Agreement::relative(encoder.gradient(), encoder1.gradient()),
                                Agreement::relative(decoder.gradient(), decoder1.gradient()));
    for (Mlp* m : {&encoder, &decoder, &encoder1, &decoder1}) m->sgd_step(0.01, 0.9);
  }
  agree.parameters = std::max(Agreement::relative(encoder.parameters(), encoder1.parameters()),
                              Agreement::relative(decoder.parameters(), decoder1.parameters()));
  return agree;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  Comm comm;
  MPI_Comm_rank(MPI_COMM_WORLD, &comm.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &comm.size);
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  Eigen::setNbThreads(1);  // one process per core already
  const int steps = quick ? 10 : 300;

  const Digits digits = load_digits();
  const Diabetes diabetes = load_diabetes();
  if (comm.rank == 0) {
    std::printf("%d ranks, global batch 128 (%ld on rank 0), %d steps; relative differences to one process:\n",
                comm.size, long(comm.end(128)), steps);
    std::printf("%-26s %13s   %9s %9s %9s\n", "loss", "final loss", "loss", "gradient", "params");
  }

  bool ok = true;
  auto classification = [&](const std::string& name, auto loss, double lr) {
    double final_loss = 0, accuracy = 0;
    const Agreement a = sum_decomposable(comm, loss, digits, steps, lr, final_loss, accuracy);
    const std::string extra = "test accuracy " + std::to_string(accuracy).substr(0, 5);
    print_row(comm, name, final_loss, a, extra.c_str());
    ok = ok && a.ok();
  };
  losskit::CrossEntropy<double> weighted;
  weighted.class_weights = Eigen::VectorXd::LinSpaced(10, 0.5, 2.0);  // a normaliser that is not the batch size
  classification("CrossEntropy (weighted)", weighted, 0.1);
  classification("CompSum tau=1.5", losskit::CompSum<double>(1.5), 0.1);
  classification("LDRKL", losskit::LDRKL<double>(), 0.1);
  classification("ALDRKL", losskit::ALDRKL<double>(), 0.1);
  classification("ZLoss", losskit::ZLoss<double>(), 0.1);

  double final_loss = 0;
  const Agreement a = cs_ib(comm, diabetes, steps, final_loss);
  print_row(comm, "CSIB beta=0.1 (all-gather)", final_loss, a, "");
  ok = ok && a.ok();

  // Every rank checked its own copy; all must agree.
  int all_ok = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  if (comm.rank == 0) std::printf("%s\n", all_ok ? "data-parallel == single process (to round-off)" : "MISMATCH");
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
