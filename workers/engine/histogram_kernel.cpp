// gradwatch's histogram counts on the CPU, one loop per group of values.
//
// The same columns as the PyTorch path in histograms.py, decided the same way (the magnitude's
// bit pattern through the same two tables for log10|g|; the same float arithmetic for the
// linear bins), so the counts are equal to the last one; only the number of passes differs:
// one here, about ten there. Built by torch.utils.cpp_extension at first use
// (histogram_native.py); the PyTorch path serves until it is built, and wherever it cannot be.

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Counts are spread over LANES interleaved copies and summed at the end: neighbouring values
// often fall in the same column (runs of zero gradients), and one copy would make every
// increment wait for the previous one.
constexpr int LANES = 4;
constexpr int64_t BLOCK = 256;

// Adds each of `count` columns to its lane's counter.
void add_to_lanes(const int32_t* block, int64_t first, int64_t count, int64_t columns, int64_t* lanes) {
  for (int64_t i = 0; i < count; ++i) ++lanes[((first + i) & (LANES - 1)) * columns + block[i]];
}

void sum_lanes(const int64_t* lanes, int64_t columns, int64_t* out) {
  for (int64_t column = 0; column < columns; ++column) {
    int64_t total = 0;
    for (int lane = 0; lane < LANES; ++lane) total += lanes[lane * columns + column];
    out[column] = total;
  }
}

// Each loop works a block at a time, columns first and then their counts: the first part has
// no dependency between elements (and, for the linear bins, is vectorised), the second is
// nothing but increments.
template <typename Float, typename Pattern>
void count_log_magnitudes(const Float* values, const int64_t* bounds, int64_t groups, const int32_t* first_column,
                          const Pattern* next_start, int shift, Pattern mask, int64_t columns, int64_t* out) {
  std::vector<int64_t> lanes(LANES * columns);
  int32_t block[BLOCK];
  for (int64_t group = 0; group < groups; ++group) {
    std::fill(lanes.begin(), lanes.end(), 0);
    for (int64_t start = bounds[group]; start < bounds[group + 1]; start += BLOCK) {
      const int64_t count = std::min<int64_t>(BLOCK, bounds[group + 1] - start);
      for (int64_t i = 0; i < count; ++i) {
        Pattern bits;
        std::memcpy(&bits, values + start + i, sizeof bits);
        const Pattern magnitude = bits & mask;  // the sign cleared: magnitudes order as integers
        const Pattern key = magnitude >> shift;
        block[i] = first_column[key] + (magnitude >= next_start[key] ? 1 : 0);
      }
      add_to_lanes(block, start, count, columns, lanes.data());
    }
    sum_lanes(lanes.data(), columns, out + group * columns);
  }
}

// The linear bins of histograms.grouped_value_counts, in the values' own precision:
// floor(v·per_unit) + shift, all exact (per_unit is a power of two), clamped to [below, above];
// exact zeros go to column 0 and NaN/±Inf to `nonfinite`.
// The linear bins of histograms.grouped_value_counts, in the values' own precision:
// floor(v·per_unit) + shift, all exact (per_unit is a power of two), clamped to [below, above];
// exact zeros go to column 0 and NaN/±Inf to `nonfinite`. Branch-free, so that it vectorises
// (a ReLU's outputs are zero at random: a branch on it would be mispredicted for every other
// value); floor is by truncation (std::floor is a library call on baseline x86-64), after
// v·per_unit is clamped to a few units beyond the bins, where the conversion is exact.
template <typename Float>
void count_values(const Float* values, int64_t size, Float per_unit, Float shift, int32_t below, int32_t above,
                  int32_t nonfinite, int64_t columns, int64_t* lanes) {
  const Float low = Float(below) - shift - 1, high = Float(above) - shift + 1;
  const int32_t offset = static_cast<int32_t>(shift);
  int32_t block[BLOCK];
  for (int64_t start = 0; start < size; start += BLOCK) {
    const int64_t count = std::min<int64_t>(BLOCK, size - start);
    const Float* chunk = values + start;
    for (int64_t i = 0; i < count; ++i) {
      const Float value = chunk[i];
      const Float magnitude = std::fabs(value);
      const bool finite = magnitude <= std::numeric_limits<Float>::max();  // false for NaN and ±Inf
      Float scaled = finite ? value * per_unit : Float(0);
      scaled = scaled < low ? low : scaled;
      scaled = scaled > high ? high : scaled;
      int32_t column = static_cast<int32_t>(scaled);
      column -= scaled < Float(column) ? 1 : 0;  // floor
      column += offset;
      column = column < below ? below : column;
      column = column > above ? above : column;
      column = magnitude == 0 ? 0 : column;
      block[i] = finite ? column : nonfinite;
    }
    add_to_lanes(block, start, count, columns, lanes);
  }
}

}  // namespace

torch::Tensor log_magnitude_counts(torch::Tensor values, torch::Tensor bounds, torch::Tensor first_column,
                                   torch::Tensor next_start, int64_t shift, int64_t columns) {
  TORCH_CHECK(values.device().is_cpu() && values.is_contiguous(), "values: a contiguous CPU tensor");
  const int64_t groups = bounds.numel() - 1;
  TORCH_CHECK(bounds[groups].item<int64_t>() == values.numel(), "bounds must cover the values");
  auto out = torch::empty({groups, columns}, torch::kInt64);
  const int64_t* group_bounds = bounds.data_ptr<int64_t>();
  if (values.scalar_type() == torch::kFloat32) {
    count_log_magnitudes<float, int32_t>(values.data_ptr<float>(), group_bounds, groups, first_column.data_ptr<int32_t>(),
                                         next_start.data_ptr<int32_t>(), shift, INT32_MAX, columns, out.data_ptr<int64_t>());
  } else {
    TORCH_CHECK(values.scalar_type() == torch::kFloat64, "values: float32 or float64");
    count_log_magnitudes<double, int64_t>(values.data_ptr<double>(), group_bounds, groups, first_column.data_ptr<int32_t>(),
                                          next_start.data_ptr<int64_t>(), shift, INT64_MAX, columns, out.data_ptr<int64_t>());
  }
  return out;
}

torch::Tensor value_counts(std::vector<torch::Tensor> tensors, double per_unit, double shift, int64_t below, int64_t above,
                           int64_t nonfinite, int64_t columns) {
  auto out = torch::empty({static_cast<int64_t>(tensors.size()), columns}, torch::kInt64);
  std::vector<int64_t> lanes(LANES * columns);
  for (size_t group = 0; group < tensors.size(); ++group) {
    const auto values = tensors[group].contiguous();
    TORCH_CHECK(values.device().is_cpu(), "values: CPU tensors");
    std::fill(lanes.begin(), lanes.end(), 0);
    if (values.scalar_type() == torch::kFloat32) {
      count_values<float>(values.data_ptr<float>(), values.numel(), static_cast<float>(per_unit), static_cast<float>(shift),
                          below, above, nonfinite, columns, lanes.data());
    } else {
      TORCH_CHECK(values.scalar_type() == torch::kFloat64, "values: float32 or float64");
      count_values<double>(values.data_ptr<double>(), values.numel(), per_unit, shift, below, above, nonfinite, columns,
                           lanes.data());
    }
    sum_lanes(lanes.data(), columns, out.data_ptr<int64_t>() + group * columns);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("log_magnitude_counts", &log_magnitude_counts, "histograms of log10|v| per group");
  module.def("value_counts", &value_counts, "histograms of the values of each tensor");
}
