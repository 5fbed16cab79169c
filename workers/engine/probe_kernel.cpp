// gradwatch's probe loops on the CPU: each statistic the probes need from a large buffer in one
// pass over it, where plain PyTorch makes one pass (and one kernel dispatch) per statistic.
//
// Row statistics. Per row of the (R, C) weight buffer and the gradients laid over it (each
// parameter's gradient as autograd left it, taking its weight's rows): ‖g‖, Σg, Σ|g|, the finite
// count, max |g| (NaN propagates, as in torch.amax), ‖w‖ and ⟨g, w⟩, written into the (7, R)
// output in that order (row_statistics.py's STATISTICS). The plain-PyTorch path makes about ten
// passes for the same figures over a flat copy of the gradients; this loop reads g and w once
// where they are. Sums run in 2 × 8 (float) or 2 × 4 (double)
// independent lanes, so they round differently from PyTorch's reductions: equal within float
// tolerance, not bit for bit (tests/workers/engine/test_row_statistics.py).
//
// Gate statistics. Per column of a recurrent layer's (N, G·H) gate pre-activations s: Σσ(s) and
// how many |s| exceed the column's bound (given as 1/bound), for the gate means and saturated
// fractions (probes.py, ForwardTaps._gates). σ uses a vectorised exp (Cephes' expf polynomial,
// within 2 ulp of the correctly rounded one), so the sums match PyTorch's within float rounding;
// the counts are exact.
//
// Dense-layer statistics. Per MLP layer, from its pre-activation s and output a = f(s), (B, N)
// each: Σa, ‖a‖, and either the saturated count (|s| > bound, for σ/tanh/softsign) or the
// alive units (columns whose largest s over the batch is positive, or NaN), for all layers in
// one call, where plain PyTorch makes four or five small kernels a layer. The tensors are
// small (B × N), so the dispatches, not the arithmetic, were the cost; sums run in float lanes
// within a row and in double across rows.
//
// An LSTM's through-time norms and gate statistics come from gradwatch's LSTM layer
// (lstm_kernel.cpp, built into this module), which takes them inside its forward and backward.
//
// The loops are compiled for AVX2 with FMA (GCC's vector extensions, one vector a 256-bit
// register); `accelerated()` says whether this CPU has both, and where it does not, the plain
// path serves (row_statistics.py), so the module never runs an instruction the CPU lacks.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "vector_math.h"

namespace {

using gradwatch::exp_lanes;
using gradwatch::Floats;
using gradwatch::Ints;

template <typename Float>
struct Lanes {
  static constexpr int count = 32 / sizeof(Float);
  typedef Float Vector __attribute__((vector_size(32)));
};

// One row: the first `length` elements of g and w (the rest of the row is padding: zeros that
// count as finite and add nothing), its 7 statistics into column `row` of the (7, rows) output.
template <typename Float>
__attribute__((target("avx2,fma"))) void row_totals(const Float* g, const Float* w, int64_t length, int64_t width, bool product,
                                                    Float* out, int64_t rows, int64_t row) {
  using Vector = typename Lanes<Float>::Vector;
  constexpr int lanes = Lanes<Float>::count;
  const Vector infinity = Vector{} + std::numeric_limits<Float>::infinity();
  const Vector one = Vector{} + Float(1);
  // Two sets of accumulators: each add waits on the previous one of its set only.
  Vector square[2]{}, sum[2]{}, magnitude[2]{}, finite[2]{}, largest[2]{}, weight_square[2]{}, dot[2]{};
  int64_t column = 0;
  for (; column + 2 * lanes <= length; column += 2 * lanes) {
    for (int set = 0; set < 2; ++set) {
      Vector v, u;
      std::memcpy(&v, g + column + set * lanes, sizeof v);
      std::memcpy(&u, w + column + set * lanes, sizeof u);
      const Vector a = v < 0 ? -v : v;
      square[set] += v * v;
      sum[set] += v;
      magnitude[set] += a;
      finite[set] += a < infinity ? one : Vector{};  // false for ±Inf and NaN
      largest[set] = (a > largest[set] || a != a) ? a : largest[set];
      weight_square[set] += u * u;
      dot[set] += v * u;
    }
  }
  Float total[7] = {};
  Float maximum = 0;
  for (int set = 0; set < 2; ++set) {
    for (int k = 0; k < lanes; ++k) {
      total[0] += square[set][k];
      total[1] += sum[set][k];
      total[2] += magnitude[set][k];
      total[3] += finite[set][k];
      total[5] += weight_square[set][k];
      total[6] += dot[set][k];
      const Float a = largest[set][k];
      maximum = (a > maximum || a != a) ? a : maximum;
    }
  }
  for (; column < length; ++column) {  // the last row of a tensor, mostly
    const Float v = g[column], a = std::fabs(v), u = w[column];
    total[0] += v * v;
    total[1] += v;
    total[2] += a;
    total[3] += a < std::numeric_limits<Float>::infinity() ? Float(1) : Float(0);
    maximum = (a > maximum || a != a) ? a : maximum;
    total[5] += u * u;
    total[6] += v * u;
  }
  total[3] += Float(width - length);  // the padding's zeros
  out[row] = std::sqrt(total[0]);
  out[rows + row] = total[1];
  out[2 * rows + row] = total[2];
  out[3 * rows + row] = total[3];
  out[4 * rows + row] = maximum;
  out[5 * rows + row] = std::sqrt(total[5]);
  if (product) out[6 * rows + row] = total[6];
}

// Tensor i takes rows ⌈n_i / C⌉ (at least one) of the (R, C) weight buffer, one after another,
// as FlatParameters lays them out; its gradient is read where autograd left it.
template <typename Float>
void statistics(const std::vector<torch::Tensor>& grads, const Float* weight, int64_t rows, int64_t width, bool product, Float* out) {
  int64_t row = 0;
  for (const torch::Tensor& grad : grads) {
    const Float* g = grad.data_ptr<Float>();
    const int64_t count = grad.numel();
    const int64_t tensor_rows = std::max<int64_t>(1, (count + width - 1) / width);
    for (int64_t k = 0; k < tensor_rows; ++k, ++row) {
      const int64_t length = std::min(width, count - k * width);
      row_totals<Float>(g + k * width, weight + row * width, std::max<int64_t>(length, 0), width, product, out, rows, row);
    }
  }
}

__attribute__((target("avx2,fma"))) void gates(const float* pre, const float* inverse_bounds, int64_t rows, int64_t columns,
                                               double* sigmoid_sums, float* saturated) {
  constexpr int lanes = 8;
  // Column blocks of 8 outermost, rows inside, so each block's sums stay in registers; a block
  // of rows at a time in float lanes, added into double totals between blocks, so the sums of
  // long sequences lose no more than PyTorch's own float reductions.
  constexpr int64_t BLOCK = 64;
  std::vector<double> totals(columns, 0.0), count_totals(columns, 0.0);
  const Floats one = Floats{} + 1.0f;
  for (int64_t first = 0; first < rows; first += BLOCK) {
    const int64_t last = std::min(rows, first + BLOCK);
    for (int64_t column = 0; column < columns; column += lanes) {
      Floats inverse, sum[2]{}, count[2]{};
      std::memcpy(&inverse, inverse_bounds + column, sizeof inverse);
      int64_t row = first;
      for (; row + 1 < last; row += 2) {  // two rows at a time: two independent chains
        for (int pair = 0; pair < 2; ++pair) {
          Floats s;
          std::memcpy(&s, pre + (row + pair) * columns + column, sizeof s);
          sum[pair] += one / (one + exp_lanes(-s));
          const Floats magnitude = s < 0 ? -s : s;
          count[pair] += magnitude * inverse > one ? one : Floats{};
        }
      }
      for (; row < last; ++row) {
        Floats s;
        std::memcpy(&s, pre + row * columns + column, sizeof s);
        sum[0] += one / (one + exp_lanes(-s));
        const Floats magnitude = s < 0 ? -s : s;
        count[0] += magnitude * inverse > one ? one : Floats{};
      }
      for (int k = 0; k < lanes; ++k) {
        totals[column + k] += double(sum[0][k]) + double(sum[1][k]);
        count_totals[column + k] += double(count[0][k]) + double(count[1][k]);
      }
    }
  }
  for (int64_t column = 0; column < columns; ++column) {
    sigmoid_sums[column] = totals[column];
    saturated[column] = static_cast<float>(count_totals[column]);
  }
}

}  // namespace

bool accelerated() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

void row_statistics(std::vector<torch::Tensor> grads, torch::Tensor weight, torch::Tensor out, bool product) {
  TORCH_CHECK(accelerated(), "this CPU lacks AVX2 or FMA: use the plain path");
  TORCH_CHECK(weight.dim() == 2 && weight.is_cpu() && weight.is_contiguous(), "weight: a contiguous (R, C) CPU tensor");
  const int64_t rows = weight.size(0), width = weight.size(1);
  int64_t needed = 0;
  for (const torch::Tensor& grad : grads) {
    TORCH_CHECK(grad.is_cpu() && grad.is_contiguous() && grad.scalar_type() == weight.scalar_type(), "grads: contiguous CPU tensors of weight's dtype");
    needed += std::max<int64_t>(1, (grad.numel() + width - 1) / width);
  }
  TORCH_CHECK(needed == rows, "grads: ", needed, " rows of width ", width, ", weight: ", rows);
  TORCH_CHECK(out.scalar_type() == weight.scalar_type(), "one dtype for all");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == 7 && out.size(1) == rows && out.is_contiguous(), "out: (7, R), contiguous");
  if (weight.scalar_type() == torch::kFloat32) {
    statistics<float>(grads, weight.data_ptr<float>(), rows, width, product, out.data_ptr<float>());
  } else {
    TORCH_CHECK(weight.scalar_type() == torch::kFloat64, "weight: float32 or float64");
    statistics<double>(grads, weight.data_ptr<double>(), rows, width, product, out.data_ptr<double>());
  }
}

// pre (N, G·H) float32, inverse_bounds (G·H,) → (Σσ(s) per column as float64, the count of
// |s| · inverse_bound > 1 per column as float32), each (G·H,).
std::vector<torch::Tensor> gate_statistics(torch::Tensor pre, torch::Tensor inverse_bounds) {
  TORCH_CHECK(accelerated(), "this CPU lacks AVX2 or FMA: use the plain path");
  TORCH_CHECK(pre.is_cpu() && pre.dim() == 2 && pre.is_contiguous() && pre.scalar_type() == torch::kFloat32,
              "pre: a contiguous (N, G·H) float32 CPU tensor");
  TORCH_CHECK(pre.size(1) % 8 == 0, "pre: G·H must be a multiple of 8");
  TORCH_CHECK(inverse_bounds.is_contiguous() && inverse_bounds.scalar_type() == torch::kFloat32 &&
                  inverse_bounds.numel() == pre.size(1),
              "inverse_bounds: (G·H,) float32");
  const int64_t columns = pre.size(1);
  auto sums = torch::empty({columns}, pre.options().dtype(torch::kFloat64));
  auto saturated = torch::empty({columns}, pre.options());
  gates(pre.data_ptr<float>(), inverse_bounds.data_ptr<float>(), pre.size(0), columns, sums.data_ptr<double>(),
        saturated.data_ptr<float>());
  return {sums, saturated};
}

// pres, acts: (B, N) float32 each; modes: 0 none, 1 saturated count (bounds), 2 alive units
// → (L, 3) float32: Σa, ‖a‖, the count.
namespace {

// One dense layer's Σa, Σa² and count (mode 1: |s| > bound; mode 2: columns whose largest s is
// positive or NaN; else none) over (rows, columns) s and a. Float lanes within a row (at most
// N/8 terms each), double across rows: as close to the exact sums as the old all-double loop,
// whose one dependent chain of double adds made it 20× slower (4 cycles an element).
__attribute__((target("avx2,fma"))) void dense_layer(const float* s, const float* a, int64_t rows, int64_t columns, int mode,
                                                     float bound, double* result) {
  const int64_t vectors = columns / 8 * 8;
  const Floats limit = Floats{} + bound, one = Floats{} + 1.0f;
  double sum = 0.0, square = 0.0, count = 0.0;
  std::vector<float> largest(s, s + columns);  // mode 2: each column's running max (NaN sticks)
  for (int64_t row = 0; row < rows; ++row) {
    const float* pre = s + row * columns;
    const float* act = a + row * columns;
    Floats row_sum{}, row_square{}, row_count{};
    float tail_sum = 0.0f, tail_square = 0.0f, tail_count = 0.0f;
    for (int64_t column = 0; column < vectors; column += 8) {
      const Floats value = gradwatch::load_lanes(act + column);
      row_sum += value;
      row_square += value * value;
      const Floats v = gradwatch::load_lanes(pre + column);
      if (mode == 1) {
        const Floats magnitude = v < 0 ? -v : v;
        row_count += magnitude > limit ? one : Floats{};
      } else if (mode == 2 && row > 0) {
        const Floats held = gradwatch::load_lanes(largest.data() + column);
        gradwatch::store_lanes(largest.data() + column, (v > held) | (v != v) ? v : held);
      }
    }
    for (int64_t column = vectors; column < columns; ++column) {
      tail_sum += act[column];
      tail_square += act[column] * act[column];
      if (mode == 1) tail_count += std::fabs(pre[column]) > bound ? 1.0f : 0.0f;
      if (mode == 2 && row > 0 && (pre[column] > largest[column] || pre[column] != pre[column])) largest[column] = pre[column];
    }
    sum += gradwatch::lane_total(row_sum) + tail_sum;
    square += gradwatch::lane_total(row_square) + tail_square;
    count += gradwatch::lane_total(row_count) + tail_count;
  }
  if (mode == 2)
    for (int64_t column = 0; column < columns; ++column) count += (largest[column] > 0.0f || largest[column] != largest[column]) ? 1.0 : 0.0;
  result[0] = sum;
  result[1] = square;
  result[2] = count;
}

}  // namespace

// Per dense layer, its (B, N) pre-activation s and output a, its mode (0: no count, 1: |s| >
// bound, 2: alive units) and bound; then the tensors whose norms follow (the layers' retained
// ∂L/∂s and the head's ∂L/∂out, empty for a gradient that never arrived) → one float32 vector
// in ForwardTaps' key order: Σa, ‖a‖ (and the count where the mode has one) per layer, then
// each tensor's norm. One call and one result tensor a step instead of a reduction, an
// unbind and a stack per figure.
torch::Tensor dense_statistics(std::vector<torch::Tensor> pres, std::vector<torch::Tensor> acts, std::vector<int64_t> modes,
                               std::vector<double> bounds, std::vector<torch::Tensor> normed) {
  TORCH_CHECK(accelerated(), "this CPU lacks AVX2 or FMA: use the plain path");
  // The forward's own tensors arrive undetached (a detach is one Python call per tensor):
  // nothing here may be recorded by autograd.
  torch::NoGradGuard no_grad;
  const int64_t layers = static_cast<int64_t>(pres.size());
  TORCH_CHECK(acts.size() == pres.size() && modes.size() == pres.size() && bounds.size() == pres.size(), "one entry a layer");
  int64_t width = static_cast<int64_t>(normed.size());
  for (const int64_t mode : modes) width += mode == 0 ? 2 : 3;
  auto out = torch::empty({width}, torch::kFloat32);
  float* result = out.data_ptr<float>();
  double totals[3];
  for (int64_t layer = 0; layer < layers; ++layer) {
    const auto pre = pres[layer].contiguous();  // itself where it already is (a Linear's output)
    const auto act = acts[layer].contiguous();
    TORCH_CHECK(pre.is_cpu() && act.is_cpu() && pre.dim() == 2 && pre.scalar_type() == torch::kFloat32 &&
                    act.scalar_type() == torch::kFloat32 && act.numel() == pre.numel(),
                "pre and act: (B, N) float32 CPU tensors");
    dense_layer(pre.data_ptr<float>(), act.data_ptr<float>(), pre.size(0), pre.size(1), static_cast<int>(modes[layer]),
                static_cast<float>(bounds[layer]), totals);
    *result++ = static_cast<float>(totals[0]);
    *result++ = static_cast<float>(std::sqrt(totals[1]));
    if (modes[layer] != 0) *result++ = static_cast<float>(totals[2]);
  }
  for (const auto& given : normed) {
    const auto tensor = given.contiguous();
    TORCH_CHECK(tensor.is_cpu() && tensor.scalar_type() == torch::kFloat32, "normed: float32 CPU tensors");
    totals[1] = 0.0;
    if (tensor.numel() > 0) {
      const int64_t columns = tensor.dim() > 0 ? tensor.size(-1) : 1;  // rows of float lanes, double across them
      dense_layer(tensor.data_ptr<float>(), tensor.data_ptr<float>(), tensor.numel() / columns, columns, 0, 0.0f, totals);
    }
    *result++ = static_cast<float>(std::sqrt(totals[1]));
  }
  return out;
}

// lstm_kernel.cpp: gradwatch's LSTM layer, built into this module.
std::vector<torch::Tensor> lstm_forward(torch::Tensor x, torch::Tensor h0, torch::Tensor c0, torch::Tensor weight_ih,
                                        torch::Tensor weight_hh, torch::Tensor bias, torch::Tensor inverse_bounds);
std::vector<torch::Tensor> lstm_backward(torch::Tensor grad_hidden, torch::Tensor grad_cell, torch::Tensor x, torch::Tensor h0,
                                         torch::Tensor c0, torch::Tensor weight_ih, torch::Tensor weight_hh, torch::Tensor hidden,
                                         torch::Tensor cell, torch::Tensor squashed, torch::Tensor gates, bool input_grad);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("lstm_forward", &lstm_forward, "x (T, B, D), h0, c0, weights, bias, inverse_bounds: hidden, cell, tanh cell, gates, stats");
  module.def("lstm_backward", &lstm_backward, "∂L/∂y, ∂L/∂c_T and the saved forward: the gradients and the (2, T) state norms");
  module.def("dense_statistics", &dense_statistics, "pres, acts (B, N) each, modes, bounds, normed: Σa, ‖a‖, [count] a layer, then ‖·‖ of each normed");
  module.def("gate_statistics", &gate_statistics, "pre (N, G·H), inverse_bounds (G·H,): (Σσ(s), #|s| > bound) per column");
  module.def("accelerated", &accelerated, "whether this CPU has AVX2 and FMA");
  module.def("row_statistics", &row_statistics, "grads (tensor i: rows ⌈n_i/C⌉), weight (R, C), out (7, R), product: the row statistics into out");
}
