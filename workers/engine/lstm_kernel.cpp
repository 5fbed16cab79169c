// gradwatch's LSTM layer for the CPU: forward and backward through the whole sequence, with the
// probes taken inside them instead of from a recomputation afterwards.
//
// PyTorch's fused kernel (oneDNN) keeps h_t, c_t and the gates to itself, so the probes used to
// recompute the gates from the output sequence (one GEMM over every timestep) and run the
// backward recursion a second time for ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖: about one extra backward pass
// on a recorded step. Here the forward writes the gate statistics (Σ of each gate, how many
// pre-activations lie beyond the saturation bound, Σh and Σh²) as it activates the gates, and the
// backward writes ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ as it forms them: the probes cost a few vector adds
// per element, no pass of their own.
//
// The equations are nn.LSTM's (blocks i, f, g, o stacked in weight_ih / weight_hh):
//   a_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh,  i, f, o = σ(a), g = tanh(a)
//   c_t = f c_{t−1} + i g,  h_t = o tanh(c_t)
// and backward (Hochreiter & Schmidhuber 1997; the gradients of backpropagation through time):
//   ∂L/∂h_t = ∂L/∂y_t + W_hhᵀ ∂L/∂a_{t+1}
//   ∂L/∂c_t = ∂L/∂h_t o (1 − tanh² c_t) + ∂L/∂c_{t+1} f_{t+1}
//   ∂L/∂a_t = (∂L/∂c_t g i(1−i), ∂L/∂c_t c_{t−1} f(1−f), ∂L/∂c_t i (1−g²), ∂L/∂h_t tanh(c_t) o(1−o)).
// ∂L/∂h_t here is the total gradient at h_t, the same quantity as through_time.py's recursion.
//
// Each timestep is two GEMMs forward (input and recurrent part of a_t), one backward (at::addmm_
// / at::mm_out, MKL or oneDNN underneath) and one vectorised element-wise pass over (B, H); the
// weight gradients are one GEMM each over every timestep. Tensors are time-major (T, B, ·), float32, contiguous;
// H a multiple of 8. The sums round differently from oneDNN's, so outputs and gradients match
// nn.LSTM within float tolerance (tests/workers/engine/test_lstm_kernel.py), not bit for bit.

#include <torch/extension.h>

#include <cmath>
#include <vector>

#include "vector_math.h"

namespace {

using gradwatch::Floats;
using gradwatch::sigmoid_lanes;
using gradwatch::tanh_lanes;

constexpr int LANES = 8;

constexpr auto load = gradwatch::load_lanes;
constexpr auto store = gradwatch::store_lanes;
constexpr auto lane_sum = gradwatch::lane_total;

// One timestep of the forward's element-wise work: the gate pre-activations `row` (B, 4H) in,
// the activated gates out in their place; c_t, tanh c_t and h_t written. With `inverse` (the
// 4H reciprocal saturation bounds), the gate sums and saturated counts are added into
// `gate_sums` / `saturated` (4H each) and Σh, Σh² into `moments`.
__attribute__((target("avx2,fma"))) void forward_step(float* gates, const float* previous_cell, float* cell, float* squashed,
                                                      float* hidden, int64_t batch, int64_t size, const float* inverse,
                                                      double* gate_sums, double* saturated, double* moments) {
  const int64_t width = 4 * size;
  const Floats one = Floats{} + 1.0f;
  Floats h_sum{}, h_square{};
  // Plain floats, read and written through load/store: a std::vector of a vector type loses its
  // 32-byte alignment (GCC drops the attribute on template arguments).
  std::vector<float> sums(inverse ? width : 0), counts(inverse ? width : 0);
  for (int64_t b = 0; b < batch; ++b) {
    float* row = gates + b * width;
    for (int64_t k = 0; k < size; k += LANES) {
      Floats s[4], a[4];
      for (int block = 0; block < 4; ++block) s[block] = load(row + block * size + k);
      a[0] = sigmoid_lanes(s[0]);
      a[1] = sigmoid_lanes(s[1]);
      a[2] = tanh_lanes(s[2]);
      a[3] = sigmoid_lanes(s[3]);
      const int64_t at = b * size + k;
      const Floats c = a[1] * load(previous_cell + at) + a[0] * a[2];
      const Floats tc = tanh_lanes(c);
      const Floats h = a[3] * tc;
      store(cell + at, c);
      store(squashed + at, tc);
      store(hidden + at, h);
      for (int block = 0; block < 4; ++block) store(row + block * size + k, a[block]);
      if (inverse) {
        for (int block = 0; block < 4; ++block) {
          const int64_t column = block * size + k;
          const Floats magnitude = s[block] < 0 ? -s[block] : s[block];
          store(&sums[column], load(&sums[column]) + a[block]);
          store(&counts[column], load(&counts[column]) + (magnitude * load(inverse + column) > one ? one : Floats{}));
        }
        h_sum += h;
        h_square += h * h;
      }
    }
  }
  if (!inverse) return;
  // Float lanes over one timestep's B rows, double totals across timesteps.
  for (int64_t column = 0; column < width; ++column) {
    gate_sums[column] += sums[column];
    saturated[column] += counts[column];
  }
  moments[0] += lane_sum(h_sum);
  moments[1] += lane_sum(h_square);
}

// One timestep of the backward's element-wise work: the activated gates `row` (B, 4H) in,
// ∂L/∂a_t out in their place. `from_above` ∂L/∂y_t, `through_time` W_hhᵀ ∂L/∂a_{t+1};
// `cell_grad` holds ∂L/∂c_{t+1} f_{t+1} on entry (∂L/∂c_T at the last step) and ∂L/∂c_t f_t on
// exit. Returns
// (‖∂L/∂h_t‖², ‖∂L/∂c_t‖²).
__attribute__((target("avx2,fma"))) std::pair<double, double> backward_step(float* gates, const float* previous_cell,
                                                                            const float* squashed, const float* from_above,
                                                                            const float* through_time, float* cell_grad,
                                                                            int64_t batch, int64_t size) {
  const int64_t width = 4 * size;
  const Floats one = Floats{} + 1.0f;
  Floats hidden_square{}, cell_square{};
  for (int64_t b = 0; b < batch; ++b) {
    float* row = gates + b * width;
    for (int64_t k = 0; k < size; k += LANES) {
      const int64_t at = b * size + k;
      const Floats i = load(row + k), f = load(row + size + k), g = load(row + 2 * size + k), o = load(row + 3 * size + k);
      const Floats tc = load(squashed + at);
      const Floats dh = load(from_above + at) + load(through_time + at);
      const Floats dc = load(cell_grad + at) + dh * o * (one - tc * tc);
      store(row + k, dc * g * i * (one - i));
      store(row + size + k, dc * load(previous_cell + at) * f * (one - f));
      store(row + 2 * size + k, dc * i * (one - g * g));
      store(row + 3 * size + k, dh * tc * o * (one - o));
      store(cell_grad + at, dc * f);
      hidden_square += dh * dh;
      cell_square += dc * dc;
    }
  }
  return {lane_sum(hidden_square), lane_sum(cell_square)};
}

void check(const torch::Tensor& tensor, const char* name) {
  TORCH_CHECK(tensor.is_cpu() && tensor.is_contiguous() && tensor.scalar_type() == torch::kFloat32, name,
              ": a contiguous float32 CPU tensor");
}

}  // namespace

bool accelerated();

// x (T, B, D), h0 and c0 (B, H), weight_ih (4H, D), weight_hh (4H, H), bias (4H,) = b_ih + b_hh,
// inverse_bounds (4H,) or empty (no statistics) →
// hidden (T, B, H), cell (T, B, H), tanh(cell) (T, B, H), the activated gates (T, B, 4H), and
// the statistics (10H + 2,) float64: Σ per gate column (4H), saturated count per column (4H), Σh,
// Σh² (empty without bounds).
std::vector<torch::Tensor> lstm_forward(torch::Tensor x, torch::Tensor h0, torch::Tensor c0, torch::Tensor weight_ih,
                                        torch::Tensor weight_hh, torch::Tensor bias, torch::Tensor inverse_bounds) {
  TORCH_CHECK(accelerated(), "this CPU lacks AVX2 or FMA: use the plain path");
  for (auto* tensor : {&x, &h0, &c0, &weight_ih, &weight_hh, &bias}) check(*tensor, "lstm_forward's tensors");
  const int64_t steps = x.size(0), batch = x.size(1), size = h0.size(1), width = 4 * size, plane = batch * size;
  TORCH_CHECK(size % LANES == 0, "H must be a multiple of 8");
  TORCH_CHECK(weight_hh.size(0) == width && weight_hh.size(1) == size && weight_ih.size(0) == width, "weights: (4H, ·)");
  const bool statistics = inverse_bounds.numel() > 0;
  if (statistics) check(inverse_bounds, "inverse_bounds");
  // a_t is formed timestep by timestep, input part and recurrent part, while its (B, 4H) slice
  // sits in cache: one GEMM over the whole sequence first wrote 3.3 MB (LSTM 64, B 64, T 50)
  // that the loop then read back from memory, 1.9 ms of a 5 ms forward on this machine.
  auto gates = torch::empty({steps * batch, width}, x.options());
  auto inputs = x.view({steps * batch, x.size(2)});
  auto hidden = torch::empty({steps, batch, size}, x.options());
  auto cell = torch::empty_like(hidden);
  auto squashed = torch::empty_like(hidden);
  auto stats = torch::zeros({statistics ? 2 * width + 2 : 0}, x.options().dtype(torch::kFloat64));
  double* totals = statistics ? stats.data_ptr<double>() : nullptr;
  auto recurrent = weight_hh.t();
  for (int64_t t = 0; t < steps; ++t) {
    auto step_gates = gates.narrow(0, t * batch, batch);
    at::addmm_out(step_gates, bias, inputs.narrow(0, t * batch, batch), weight_ih.t());
    step_gates.addmm_(t > 0 ? hidden[t - 1] : h0, recurrent);
    forward_step(step_gates.data_ptr<float>(), t > 0 ? cell.data_ptr<float>() + (t - 1) * plane : c0.data_ptr<float>(),
                 cell.data_ptr<float>() + t * plane, squashed.data_ptr<float>() + t * plane, hidden.data_ptr<float>() + t * plane,
                 batch, size, statistics ? inverse_bounds.data_ptr<float>() : nullptr, totals, totals ? totals + width : nullptr,
                 totals ? totals + 2 * width : nullptr);
  }
  return {hidden, cell, squashed, gates.view({steps, batch, width}), stats};
}

// The saved forward (x, h0, c0, the weights, hidden, cell, tanh cell, the activated gates —
// overwritten with ∂L/∂a), ∂L/∂y (T, B, H) and ∂L/∂c_T (B, H) →
// ∂L/∂x (T, B, D) (empty unless input_grad), ∂L/∂h0, ∂L/∂c0, ∂L/∂W_ih, ∂L/∂W_hh, ∂L/∂b, and the
// norms (2, T) float32: ‖∂L/∂h_t‖ and ‖∂L/∂c_t‖ at every timestep.
std::vector<torch::Tensor> lstm_backward(torch::Tensor grad_hidden, torch::Tensor grad_cell, torch::Tensor x, torch::Tensor h0,
                                         torch::Tensor c0, torch::Tensor weight_ih, torch::Tensor weight_hh, torch::Tensor hidden,
                                         torch::Tensor cell, torch::Tensor squashed, torch::Tensor gates, bool input_grad) {
  TORCH_CHECK(accelerated(), "this CPU lacks AVX2 or FMA: use the plain path");
  for (auto* tensor : {&grad_hidden, &grad_cell, &x, &h0, &c0, &weight_ih, &weight_hh, &hidden, &cell, &squashed, &gates})
    check(*tensor, "lstm_backward's tensors");
  const int64_t steps = hidden.size(0), batch = hidden.size(1), size = hidden.size(2), width = 4 * size, plane = batch * size;
  TORCH_CHECK(grad_hidden.sizes() == hidden.sizes() && gates.size(2) == width, "grad_hidden: (T, B, H), gates: (T, B, 4H)");
  auto through_time = torch::zeros({batch, size}, hidden.options());  // W_hhᵀ ∂L/∂a_{t+1}; nothing beyond T
  auto cell_grad = grad_cell.clone();                                 // ∂L/∂c_T from the state handed on
  auto norms = torch::empty({2, steps}, hidden.options());
  float* norm = norms.data_ptr<float>();
  for (int64_t t = steps - 1; t >= 0; --t) {
    auto step_gates = gates[t];
    const auto [hidden_square, cell_square] = backward_step(
        step_gates.data_ptr<float>(), t > 0 ? cell.data_ptr<float>() + (t - 1) * plane : c0.data_ptr<float>(),
        squashed.data_ptr<float>() + t * plane, grad_hidden.data_ptr<float>() + t * plane, through_time.data_ptr<float>(),
        cell_grad.data_ptr<float>(), batch, size);
    norm[t] = static_cast<float>(std::sqrt(hidden_square));
    norm[steps + t] = static_cast<float>(std::sqrt(cell_square));
    at::mm_out(through_time, step_gates, weight_hh);  // at t = 0 this is ∂L/∂h0
  }
  auto flat = gates.view({steps * batch, width});
  // (xᵀ ∂L/∂a)ᵀ, not ∂L/∂aᵀ x: with few inputs (D = 2 on the adding problem) the GEMM with a
  // transposed tall left factor was 7× slower here.
  auto grad_weight_ih = at::mm(x.view({steps * batch, x.size(2)}).t(), flat).t().contiguous();
  // Σ_t ∂L/∂a_t h_{t−1}ᵀ: h_{t−1} is hidden[t − 1] for t ≥ 1 and h0 at t = 0.
  auto grad_weight_hh = at::mm(flat.narrow(0, 0, batch).t(), h0);
  if (steps > 1) grad_weight_hh.addmm_(flat.narrow(0, batch, (steps - 1) * batch).t(), hidden.view({steps * batch, size}).narrow(0, 0, (steps - 1) * batch));
  auto grad_bias = flat.sum(0);
  auto grad_x = input_grad ? at::mm(flat, weight_ih).view({steps, batch, x.size(2)}) : torch::Tensor();
  return {grad_x, through_time, cell_grad, grad_weight_ih, grad_weight_hh, grad_bias, norms};
}
