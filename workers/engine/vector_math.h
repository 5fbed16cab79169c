// Vector maths shared by gradwatch's C++ loops (probe_kernel.cpp, lstm_kernel.cpp): one 256-bit
// register of 8 floats (GCC's vector extensions), compiled for AVX2 with FMA. Callers check
// `accelerated()` before they run any of it.

#pragma once

#include <cstdint>
#include <cstring>

namespace gradwatch {

// e^x for every lane: x = n ln2 + r, |r| ≤ ln2/2, e^r by Cephes' degree-6 polynomial, 2^n put
// into the exponent bits. Inputs are clamped to where float32's e^x is finite and normal.
typedef float Floats __attribute__((vector_size(32)));
typedef int32_t Ints __attribute__((vector_size(32)));

__attribute__((target("avx2,fma"))) inline Floats exp_lanes(Floats x) {
  x = x > 88.3762626647949f ? Floats{} + 88.3762626647949f : x;
  x = x < -87.3365478515625f ? Floats{} - 87.3365478515625f : x;
  // Round x·log2(e) to the nearest integer by adding and subtracting 1.5·2^23.
  const Floats n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  Floats r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  Floats p = Floats{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const Ints exponent = (__builtin_convertvector(n, Ints) + 127) << 23;
  Floats scale;
  std::memcpy(&scale, &exponent, sizeof scale);
  return p * scale;
}

// Unaligned loads and stores of 8 floats (a plain float buffer has no 32-byte alignment).
inline Floats load_lanes(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store_lanes(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

// The 8 lanes' total, in double.
inline double lane_total(Floats v) {
  double total = 0;
  for (int k = 0; k < 8; ++k) total += v[k];
  return total;
}

// σ(x) = 1 / (1 + e^−x) and tanh(x) = 2σ(2x) − 1, lane by lane.
__attribute__((target("avx2,fma"))) inline Floats sigmoid_lanes(Floats x) { return 1.0f / (1.0f + exp_lanes(-x)); }
__attribute__((target("avx2,fma"))) inline Floats tanh_lanes(Floats x) { return 2.0f / (1.0f + exp_lanes(-2.0f * x)) - 1.0f; }

}  // namespace gradwatch
