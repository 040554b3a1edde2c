// A libtorch training loop with a losskit loss through autograd
// (losskit/torch.hpp): a 7×7 restoration filter, a torch::nn::Conv2d starting
// from the identity, is trained by torch::optim::Adam to undo a Gaussian blur
// (σ = 1 px) and Gaussian noise (σ = 0.05) on synthetic grey images, with
// losskit's SSIM loss on the N×1×H×W batch as the objective. losskit computes
// the loss and its analytic gradient in one pass; autograd carries the
// gradient through the convolution to the filter's weights.
//
// Prints the SSIM and PSNR of the degraded and the restored test images and
// fails (exit 1) unless restoration improved SSIM.
//
// Build: -DLOSSKIT_WITH_TORCH=ON (target example_torch_ssim_restoration).
// Run:   ./example_torch_ssim_restoration           (300 steps)
//        ./example_torch_ssim_restoration --quick   (CTest: 40 steps)
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <losskit/torch.hpp>

namespace F = torch::nn::functional;

// Smooth shapes with sharp edges: a few random discs and bars on a gradient.
torch::Tensor synthetic_images(int64_t n, int64_t size) {
  const torch::Tensor r = torch::linspace(0, 1, size);
  const torch::Tensor yy = r.view({size, 1}).expand({size, size}), xx = r.view({1, size}).expand({size, size});
  torch::Tensor out = torch::empty({n, 1, size, size});
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor img = 0.3 + 0.3 * xx * torch::rand({1}).item<float>();
    for (int k = 0; k < 4; ++k) {
      const auto c = torch::rand({3});
      const torch::Tensor disc = ((xx - c[0]).square() + (yy - c[1]).square() < 0.02 + 0.03 * c[2]).to(torch::kFloat);
      img = img + (k % 2 ? 0.25 : -0.2) * disc;
    }
    img = img + 0.15 * (torch::sin(12 * xx + 5 * torch::rand({1}).item<float>()) > 0.6).to(torch::kFloat);
    out[i][0] = img.clamp(0, 1);
  }
  return out;
}

torch::Tensor degrade(const torch::Tensor& clean) {
  torch::Tensor g = torch::arange(-3, 4, torch::kFloat);
  g = (-g.square() / 2).exp();
  g = g / g.sum();
  const torch::Tensor blur = (g.view({7, 1}) * g.view({1, 7})).view({1, 1, 7, 7});
  const torch::Tensor padded = F::pad(clean, F::PadFuncOptions({3, 3, 3, 3}).mode(torch::kReplicate));
  return (F::conv2d(padded, blur) + 0.05 * torch::randn_like(clean)).clamp(0, 1);
}

struct Restorer : torch::nn::Module {
  torch::nn::Conv2d conv{torch::nn::Conv2dOptions(1, 1, 7).padding(3).padding_mode(torch::kReplicate)};
  Restorer() {
    register_module("conv", conv);
    torch::NoGradGuard no_grad;
    conv->weight.zero_();
    conv->weight[0][0][3][3] = 1;  // the identity filter
    conv->bias.zero_();
  }
  torch::Tensor forward(const torch::Tensor& x) { return conv->forward(x); }
};

double psnr(const torch::Tensor& x, const torch::Tensor& clean) {
  return -10 * std::log10((x - clean).square().mean().item<double>());
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int steps = quick ? 40 : 300;
  torch::manual_seed(1);
  const int64_t size = 64;
  const torch::Tensor train_clean = synthetic_images(8, size), test_clean = synthetic_images(4, size);
  const torch::Tensor train_noisy = degrade(train_clean), test_noisy = degrade(test_clean);

  // The functor carries every option; its size is the images' H, W, C.
  losskit::SSIMLoss<float> ssim(size, size, 1);
  Restorer model;
  torch::optim::Adam adam(model.parameters(), torch::optim::AdamOptions(2e-3));
  for (int step = 0; step < steps; ++step) {
    adam.zero_grad();
    const torch::Tensor loss = losskit::torch::ssim_loss(model.forward(train_noisy), train_clean, ssim);
    loss.backward();  // conv weight/bias gradients, through losskit's analytic SSIM gradient
    adam.step();
    if (step % (steps / 4) == 0) std::printf("step %3d  train SSIM loss %.4f\n", step, loss.item<float>());
  }

  torch::NoGradGuard no_grad;
  const torch::Tensor restored = model.forward(test_noisy).clamp(0, 1);
  const double before = 1 - losskit::torch::ssim_loss(test_noisy, test_clean, ssim).item<double>();
  const double after = 1 - losskit::torch::ssim_loss(restored, test_clean, ssim).item<double>();
  std::printf("test images: degraded SSIM %.4f PSNR %.2f dB; restored SSIM %.4f PSNR %.2f dB\n", before,
              psnr(test_noisy, test_clean), after, psnr(restored, test_clean));
  if (!(after > before)) {
    std::printf("restoration did not improve SSIM\n");
    return 1;
  }
  return 0;
}
