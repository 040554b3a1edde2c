// A word-level next-word model on the King James Version, trained with
// LinearCrossEntropy, and timed against the materialised path.
//
// Data: the KJV text of Debian's bible-kjv-text package (public domain; see
// examples/data/README.md), decoded by its `bible` program
// (`bible Gen1:1-Rev22:21`), or any text file given as the last argument.
// Words are maximal runs of letters, lower-cased: 793k words, a vocabulary
// of 12.5k (every word is a class). The last 5 % of the words are held out.
//
// Model: embedding → linear head, h_i = E[:, w_{i−1}] (d = 64),
// p(w_i | w_{i−1}) = softmax(W·h_i + b): a bigram model with a 12.5k-class
// output layer, trained by SGD on minibatches of consecutive words.
//
// Prints per epoch the training and held-out loss, the time per step of
// LinearCrossEntropy and of the materialised path (logits = W·H + b, then
// CrossEntropy, then the GEMMs for the gradients) on the same minibatch,
// and the memory each needs beyond the model (workspace sizes: the block and
// the per-column vectors, against the logits and their gradient).
//
// Run: ./example_kjv_next_word [--quick] [text-file]
//   full: 3 epochs over the whole text, minibatch 2048
//   --quick (CTest): 12 steps of 512 words on the first 60k words
// Exit code 1 if a check fails (the two paths must give the same loss and
// gradients on the first minibatch; the loss must fall), 77 (skipped) if no
// text is found.
#include <Eigen/Core>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <losskit/cross_entropy.hpp>
#include <losskit/linear_cross_entropy.hpp>
#include <numeric>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using Matrix = Eigen::MatrixXf;
using Vector = Eigen::VectorXf;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::string read_text(const char* path) {
  std::FILE* f = path ? std::fopen(path, "rb") : popen("bible Gen1:1-Rev22:21 2>/dev/null", "r");
  if (!f) return {};
  std::string text;
  char buf[1 << 16];
  for (std::size_t got; (got = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, got);
  if (path)
    std::fclose(f);
  else
    pclose(f);
  return text;
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (const char c : text) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      w += char(std::tolower(static_cast<unsigned char>(c)));
    } else if (!w.empty()) {
      words.push_back(w);
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(w);
  return words;
}

struct Model {
  Matrix e, w;  // embedding d×V, head V×d
  Vector b;
};

// The materialised path's value and gradients on one minibatch.
float materialised_step(const Model& m, const Matrix& h, const Eigen::VectorXi& y, Matrix& logits, Matrix& g,
                        Matrix& grad_h, Matrix& grad_w, Vector& grad_b) {
  logits.noalias() = m.w * h;
  logits.colwise() += m.b;
  const float loss = losskit::CrossEntropy<float>{}.value_and_gradient(logits, y, g);
  grad_h.noalias() = m.w.transpose() * g;
  grad_w.noalias() = g * h.transpose();
  grad_b = g.rowwise().sum();
  return loss;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  const char* path = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else
      path = argv[i];
  }
  const std::vector<std::string> words = words_of(read_text(path));
  if (words.size() < 1000) {
    std::printf("no text: install bible-kjv-text (provides `bible`) or pass a text file; skipped\n");
    return 77;
  }
  // Every word is a class, most frequent first.
  std::unordered_map<std::string, int> count;
  for (const auto& w : words) ++count[w];
  std::vector<std::pair<std::string, int>> by_freq(count.begin(), count.end());
  std::sort(by_freq.begin(), by_freq.end(),
            [](const auto& a, const auto& b) { return a.second != b.second ? a.second > b.second : a.first < b.first; });
  std::unordered_map<std::string, int> id;
  for (std::size_t k = 0; k < by_freq.size(); ++k) id[by_freq[k].first] = int(k);
  std::vector<int> tokens(words.size());
  for (std::size_t i = 0; i < words.size(); ++i) tokens[i] = id[words[i]];
  const Eigen::Index classes = Eigen::Index(by_freq.size()), d = 64;
  const std::size_t held_out_start = tokens.size() - tokens.size() / 20;
  const std::size_t train_end = quick ? std::min<std::size_t>(60000, held_out_start) : held_out_start;
  const Eigen::Index batch = quick ? 512 : 2048;
  const int epochs = quick ? 1 : 3;
  const std::size_t steps_per_epoch = quick ? 12 : (train_end - 1) / std::size_t(batch);
  std::printf("KJV: %zu words, vocabulary %ld (every word a class), d = %ld, minibatch %ld; training on %zu words, "
              "%zu held out\n",
              words.size(), long(classes), long(d), long(batch), train_end, tokens.size() - held_out_start);

  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Model model;
  model.e = Matrix(d, classes);
  model.w = Matrix(classes, d);
  for (Eigen::Index i = 0; i < model.e.size(); ++i) model.e.data()[i] = 0.3f * normal(gen);
  for (Eigen::Index i = 0; i < model.w.size(); ++i) model.w.data()[i] = normal(gen) / std::sqrt(float(d));
  model.b = Vector::Zero(classes);
  const float lr = 2.0f;

  losskit::LinearCrossEntropy<float> head;
  Matrix h(d, batch), grad_h, grad_w;
  Vector grad_b;
  Eigen::VectorXi y(batch), prev(batch);
  // The materialised path's buffers (C×N twice), kept for the timing.
  Matrix logits(classes, batch), g(classes, batch), grad_h2, grad_w2;
  Vector grad_b2;
  auto fill = [&](std::size_t start) {
    for (Eigen::Index j = 0; j < batch; ++j) {
      prev(j) = tokens[start + std::size_t(j)];
      y(j) = tokens[start + std::size_t(j) + 1];
      h.col(j) = model.e.col(prev(j));
    }
  };
  auto held_out_loss = [&] {
    const std::size_t n = std::min<std::size_t>(tokens.size() - held_out_start - 1, quick ? 2048 : 40000);
    Matrix hh(d, Eigen::Index(n));
    Eigen::VectorXi yy(static_cast<Eigen::Index>(n));
    for (std::size_t j = 0; j < n; ++j) {
      hh.col(Eigen::Index(j)) = model.e.col(tokens[held_out_start + j]);
      yy(Eigen::Index(j)) = tokens[held_out_start + j + 1];
    }
    return head(hh, model.w, model.b, yy);
  };

  bool ok = true;
  std::vector<std::size_t> starts((train_end - 1) / std::size_t(batch));
  for (std::size_t s = 0; s < starts.size(); ++s) starts[s] = s * std::size_t(batch);
  const double initial = held_out_loss();
  std::printf("epoch 0: held-out loss %.4f (log V = %.4f)\n", initial, std::log(double(classes)));
  double last = initial;
  for (int epoch = 1; epoch <= epochs; ++epoch) {
    std::shuffle(starts.begin(), starts.end(), gen);
    double train_sum = 0, lce_ms = 0, mat_ms = 0;
    int mat_steps = 0;
    for (std::size_t step = 0; step < steps_per_epoch; ++step) {
      fill(starts[step % starts.size()]);
      const auto t0 = Clock::now();
      const float loss = head.value_and_gradient(h, model.w, model.b, y, grad_h, grad_w, grad_b);
      lce_ms += ms_since(t0);
      train_sum += loss;
      if (step < 2) {  // the materialised path on the same minibatch: same numbers, its time
        const auto t1 = Clock::now();
        const float loss2 = materialised_step(model, h, y, logits, g, grad_h2, grad_w2, grad_b2);
        mat_ms += ms_since(t1);
        ++mat_steps;
        const float e = std::max({std::abs(loss - loss2) / loss2,
                                  (grad_w - grad_w2).cwiseAbs().maxCoeff() / grad_w2.cwiseAbs().maxCoeff(),
                                  (grad_h - grad_h2).cwiseAbs().maxCoeff() / grad_h2.cwiseAbs().maxCoeff(),
                                  (grad_b - grad_b2).cwiseAbs().maxCoeff() / grad_b2.cwiseAbs().maxCoeff()});
        if (epoch == 1 && step == 0)
          std::printf("first minibatch: loss %.6f (materialised %.6f), worst relative difference %.2g\n", loss, loss2,
                      e);
        if (!(e < 1e-4f)) ok = false;
      }
      model.w -= lr * grad_w;
      model.b -= lr * grad_b;
      for (Eigen::Index j = 0; j < batch; ++j) model.e.col(prev(j)) -= lr * grad_h.col(j);
    }
    last = held_out_loss();
    std::printf("epoch %d: training loss %.4f, held-out loss %.4f; per step: LinearCrossEntropy %.1f ms, "
                "materialised %.1f ms\n",
                epoch, train_sum / double(steps_per_epoch), last, lce_ms / double(steps_per_epoch),
                mat_ms / double(std::max(mat_steps, 1)));
  }
  const double lce_mib =
      (double(std::min(head.block_size, classes)) * double(batch) * sizeof(float) + 57.0 * double(batch)) / 1048576.0;
  const double mat_mib = 2.0 * double(classes) * double(batch) * sizeof(float) / 1048576.0;
  std::printf("memory beyond the model per step: LinearCrossEntropy %.1f MiB (one %ld-class block), materialised "
              "%.1f MiB (logits and their gradient)\n",
              lce_mib, long(std::min(head.block_size, classes)), mat_mib);
  if (!(last < initial)) {
    std::printf("FAILED: the held-out loss did not fall\n");
    ok = false;
  }
  if (!ok) std::printf("FAILED\n");
  return ok ? 0 : 1;
}
