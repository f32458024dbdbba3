// Eager-CPU kernels for what Paddle's own CPU kernels do slowly (docs/performance.md):
//
// * a 3x3 depth-wise convolution, stride 1, zero padding 1, float32, with `multiplier`
//   filters per input channel (filter c * multiplier + j reads input channel c, as
//   nn.Conv2D(groups=C) lays them out), on channels-last [B, H, W, C] tokens as the model
//   holds them, writing [multiplier, B, H, W, C] (no transposes around it). Paddle's
//   CPU kernel runs an im2col and a GEMM of one output row per channel and image (NCHW);
//   this reads each token's channels once per tap.
// * the softmax over the last axis (float32), forward in place or into a new tensor, and
//   its backward. Paddle's CPU softmax calls a scalar exp per element.
//
// * GELU (the exact, erf form of nn.GELU()), forward and backward. Paddle's CPU kernel
//   calls a scalar erf per element.
// * LayerNorm over the last axis for training: a forward that keeps each row's mean and
//   1 / std, and the backward from them. Paddle's CPU layer_norm_grad is many times
//   slower than its forward.
//
// Compiled on first use by paddle_pale/kernels/native.py; paddle_pale/kernels/cpu.py
// calls them through autograd functions whose backward is below too.
// the AVX2 forms of exp, erf, softmax and GELU are built on x86 and chosen at run time
// where the CPU has AVX2 and FMA; elsewhere the plain loops run
#ifndef PALE_X86
#if defined(__x86_64__) || defined(__i386__)
#define PALE_X86 1
#else
#define PALE_X86 0
#endif
#endif
#if PALE_X86
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <vector>

#include "paddle/extension.h"

namespace {

bool has_avx2() {
#if PALE_X86
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// acc[i] += a[i] * b[i] for i < n: the convolutions' inner loop over the channels
void multiply_add_plain(float* acc, const float* a, const float* b, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += a[i] * b[i];
}

#if PALE_X86
__attribute__((target("avx2,fma"))) void multiply_add_avx2(float* acc, const float* a,
                                                           const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i),
                                              _mm256_loadu_ps(acc + i)));
  }
  for (; i < n; ++i) acc[i] += a[i] * b[i];
}
#endif  // PALE_X86

using MultiplyAdd = void (*)(float*, const float*, const float*, int64_t);

MultiplyAdd pick_multiply_add() {
#if PALE_X86
  if (has_avx2()) return multiply_add_avx2;
#endif
  return multiply_add_plain;
}

}  // namespace

namespace {

// filters [C * M, 1, 3, 3] -> [M][9][C]: one tap of every channel contiguous
std::vector<float> taps_by_channel(const paddle::Tensor& w, int64_t C, int64_t M) {
  const float* wp = w.data<float>();
  std::vector<float> taps(static_cast<size_t>(M) * 9 * C);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < M; ++j)
      for (int k = 0; k < 9; ++k) taps[(j * 9 + k) * C + c] = wp[(c * M + j) * 9 + k];
  return taps;
}

// fn(tap, row, at) for each tap (ky, kx) of position (y, x) whose input
// (y + sign (ky - 1), x + sign (kx - 1)) lies inside the H x W map; tap = 3 ky + kx.
// sign 1: the inputs an output reads; -1: the outputs that read an input.
template <typename Function>
inline void for_each_tap(int64_t y, int64_t x, int64_t H, int64_t W, int sign, Function fn) {
  for (int ky = 0; ky < 3; ++ky) {
    const int64_t row = y + sign * (ky - 1);
    if (row < 0 || row >= H) continue;
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t at = x + sign * (kx - 1);
      if (at < 0 || at >= W) continue;
      fn(ky * 3 + kx, row, at);
    }
  }
}

void check_channels_last(const paddle::Tensor& x, const paddle::Tensor& w) {
  PD_CHECK(x.is_cpu() && w.is_cpu(), "pale depth-wise conv: CPU tensors only");
  PD_CHECK(x.dtype() == paddle::DataType::FLOAT32 && w.dtype() == paddle::DataType::FLOAT32,
           "pale depth-wise conv: float32 only");
  PD_CHECK(x.shape().size() == 4, "pale depth-wise conv: input must be [B, H, W, C]");
  const auto& ws = w.shape();
  PD_CHECK(ws.size() == 4 && ws[1] == 1 && ws[2] == 3 && ws[3] == 3 && ws[0] % x.shape()[3] == 0,
           "pale depth-wise conv: filters must be [C * multiplier, 1, 3, 3]");
}

}  // namespace

// x [B, H, W, C] -> out [M, B, H, W, C (+ 1)]: out[j, b, y, x, c] = sum over the taps
// (ky, kx) of filter c M + j times x[b, y + ky - 1, x + kx - 1, c]; with `ones`, a last
// channel of 1 (what a linear map's bias row reads).
std::vector<paddle::Tensor> DepthwiseConvChannelsLast(const paddle::Tensor& x,
                                                      const paddle::Tensor& w, bool ones) {
  check_channels_last(x, w);
  const auto& s = x.shape();
  const int64_t B = s[0], H = s[1], W = s[2], C = s[3];
  const int64_t M = w.shape()[0] / C;
  const int64_t stride = C + (ones ? 1 : 0);
  auto out = paddle::empty({M, B, H, W, stride}, x.dtype(), x.place());
  const std::vector<float> taps = taps_by_channel(w, C, M);
  const MultiplyAdd multiply_add = pick_multiply_add();
  const float* xp = x.data<float>();
  float* op = out.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t j = 0; j < M; ++j) {
        for (int64_t col = 0; col < W; ++col) {
          float* o = op + (((j * B + b) * H + y) * W + col) * stride;
          for (int64_t c = 0; c < C; ++c) o[c] = 0.f;
          if (ones) o[C] = 1.f;
          for_each_tap(y, col, H, W, 1, [&](int tap, int64_t row, int64_t at) {
            const float* in = xp + ((b * H + row) * W + at) * C;
            const float* f = taps.data() + (j * 9 + tap) * C;
            multiply_add(o, f, in, C);
          });
        }
      }
    }
  }
  return {out};
}

std::vector<paddle::Tensor> DepthwiseConvChannelsLastBackward(const paddle::Tensor& x,
                                                              const paddle::Tensor& w,
                                                              const paddle::Tensor& grad,
                                                              bool ones) {
  check_channels_last(x, w);
  const auto& s = x.shape();
  const int64_t B = s[0], H = s[1], W = s[2], C = s[3];
  const int64_t M = w.shape()[0] / C;
  const int64_t stride = C + (ones ? 1 : 0);
  PD_CHECK(grad.shape() == std::vector<int64_t>({M, B, H, W, stride}),
           "pale depth-wise conv: the output gradient's shape must be the output's");
  auto grad_x = paddle::empty(s, x.dtype(), x.place());
  auto grad_w = paddle::empty(w.shape(), w.dtype(), w.place());
  const std::vector<float> taps = taps_by_channel(w, C, M);
  const MultiplyAdd multiply_add = pick_multiply_add();
  const float* xp = x.data<float>();
  const float* gp = grad.data<float>();
  float* gxp = grad_x.data<float>();
  // d(x)[b, y, x] = sum over j and taps of filter (ky, kx) times d(out)[j, b, y - ky + 1,
  // x - kx + 1]: every output that read it
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t y = 0; y < H; ++y) {
      for (int64_t col = 0; col < W; ++col) {
        float* o = gxp + ((b * H + y) * W + col) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = 0.f;
        for (int64_t j = 0; j < M; ++j) {
          for_each_tap(y, col, H, W, -1, [&](int tap, int64_t row, int64_t at) {
            const float* g = gp + (((j * B + b) * H + row) * W + at) * stride;
            const float* f = taps.data() + (j * 9 + tap) * C;
            multiply_add(o, f, g, C);
          });
        }
      }
    }
  }
  // d(filter)[j, tap, c] = sum over b, y, x of d(out)[j, b, y, x, c] times the input the
  // tap read; float sums per row, double per thread, then over threads
  const int64_t size = M * 9 * C;
  std::vector<double> total(static_cast<size_t>(size), 0.0);
#pragma omp parallel
  {
    std::vector<double> mine(static_cast<size_t>(size), 0.0);
    std::vector<float> row_sum(static_cast<size_t>(size));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t y = 0; y < H; ++y) {
        std::fill(row_sum.begin(), row_sum.end(), 0.f);
        for (int64_t j = 0; j < M; ++j) {
          for (int64_t col = 0; col < W; ++col) {
            const float* g = gp + (((j * B + b) * H + y) * W + col) * stride;
            for_each_tap(y, col, H, W, 1, [&](int tap, int64_t row, int64_t at) {
              const float* in = xp + ((b * H + row) * W + at) * C;
              float* acc = row_sum.data() + (j * 9 + tap) * C;
              multiply_add(acc, g, in, C);
            });
          }
        }
        for (int64_t i = 0; i < size; ++i) mine[i] += row_sum[i];
      }
    }
#pragma omp critical
    for (int64_t i = 0; i < size; ++i) total[i] += mine[i];
  }
  float* gwp = grad_w.data<float>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < M; ++j)
      for (int k = 0; k < 9; ++k)
        gwp[(c * M + j) * 9 + k] = static_cast<float>(total[(j * 9 + k) * C + c]);
  return {grad_x, grad_w};
}

namespace {

#if PALE_X86
__attribute__((target("avx2,fma"))) inline __m256 exp_avx2(__m256 x) {
  // e^x for x <= 0 (scores minus their row maximum), Cephes' polynomial after
  // x = n ln 2 + r; 0 below -87.3 (where float's e^x is denormal), so -inf gives 0
  const __m256 lowest = _mm256_set1_ps(-87.3f);
  const __m256 in_range = _mm256_cmp_ps(x, lowest, _CMP_GE_OQ);
  x = _mm256_max_ps(x, lowest);
  __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i exponent =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(exponent)), in_range);
}

#endif  // PALE_X86

float row_max(const float* in, int L) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int i = 0; i < L; ++i) m = in[i] > m ? in[i] : m;
  return m;
}

#if PALE_X86
// out = softmax(in) of one row (out may be in)
__attribute__((target("avx2,fma"))) void softmax_row_avx2(const float* in, float* out, int L) {
  const float m = row_max(in, L);
  const __m256 vm = _mm256_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= L; i += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(in + i), vm));
    _mm256_storeu_ps(out + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, vsum);
  float sum = 0.f;
  for (int k = 0; k < 8; ++k) sum += lanes[k];
  for (; i < L; ++i) {
    out[i] = std::exp(in[i] - m);
    sum += out[i];
  }
  const float inverse = 1.f / sum;
  for (i = 0; i < L; ++i) out[i] *= inverse;
}

#endif  // PALE_X86

void softmax_row_plain(const float* in, float* out, int L) {
  const float m = row_max(in, L);
  float sum = 0.f;
  for (int i = 0; i < L; ++i) {
    out[i] = std::exp(in[i] - m);
    sum += out[i];
  }
  const float inverse = 1.f / sum;
  for (int i = 0; i < L; ++i) out[i] *= inverse;
}

void check_softmax(const paddle::Tensor& x) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32,
           "pale softmax: float32 CPU tensors only");
  PD_CHECK(!x.shape().empty() && x.shape().back() > 0, "pale softmax: empty last axis");
}

void softmax_rows(const float* in, float* out, int64_t rows, int L) {
  [[maybe_unused]] const bool avx2 = has_avx2();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
#if PALE_X86
    if (avx2) {
      softmax_row_avx2(in + r * L, out + r * L, L);
      continue;
    }
#endif
    softmax_row_plain(in + r * L, out + r * L, L);
  }
}

}  // namespace

std::vector<paddle::Tensor> SoftmaxInplace(paddle::Tensor& x) {  // NOLINT
  check_softmax(x);
  const int64_t L = x.shape().back();
  softmax_rows(x.data<float>(), x.data<float>(), x.numel() / L, static_cast<int>(L));
  return {x};
}

std::vector<paddle::Tensor> SoftmaxForward(const paddle::Tensor& x) {
  check_softmax(x);
  const int64_t L = x.shape().back();
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  softmax_rows(x.data<float>(), out.data<float>(), x.numel() / L, static_cast<int>(L));
  return {out};
}

// d(x) = y * (d(y) - sum(y * d(y))) per row
std::vector<paddle::Tensor> SoftmaxBackward(const paddle::Tensor& y, const paddle::Tensor& grad) {
  check_softmax(y);
  PD_CHECK(grad.shape() == y.shape(), "pale softmax: the gradient's shape must be the output's");
  const int64_t L = y.shape().back();
  const int64_t rows = y.numel() / L;
  auto grad_x = paddle::empty(y.shape(), y.dtype(), y.place());
  const float* yp = y.data<float>();
  const float* gp = grad.data<float>();
  float* op = grad_x.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = yp + r * L;
    const float* gr = gp + r * L;
    float* o = op + r * L;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < L; ++i) dot += yr[i] * gr[i];
#pragma omp simd
    for (int64_t i = 0; i < L; ++i) o[i] = yr[i] * (gr[i] - dot);
  }
  return {grad_x};
}

namespace {

#if PALE_X86
__attribute__((target("avx2,fma"))) inline __m256 erf_avx2(__m256 x) {
  // Abramowitz & Stegun 7.1.26 on |x| (absolute error below 1.5e-7), sign restored
  const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.f));
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.f), x);
  const __m256 t = _mm256_div_ps(
      _mm256_set1_ps(1.f), _mm256_fmadd_ps(a, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.f)));
  __m256 y = _mm256_set1_ps(1.061405429f);
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-1.453152027f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(1.421413741f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(-0.284496736f));
  y = _mm256_fmadd_ps(y, t, _mm256_set1_ps(0.254829592f));
  y = _mm256_mul_ps(y, t);
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(a, a)));
  return _mm256_or_ps(_mm256_fnmadd_ps(y, e, _mm256_set1_ps(1.f)), sign);
}

#endif  // PALE_X86

constexpr float kInverseSqrt2 = 0.70710678118654752f;
constexpr float kInverseSqrt2Pi = 0.39894228040143268f;

#if PALE_X86
// Phi(x), the standard normal CDF
__attribute__((target("avx2,fma"))) inline __m256 normal_cdf_avx2(__m256 x) {
  const __m256 erf = erf_avx2(_mm256_mul_ps(x, _mm256_set1_ps(kInverseSqrt2)));
  return _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_add_ps(_mm256_set1_ps(1.f), erf));
}

#endif  // PALE_X86

inline float normal_cdf(float x) { return 0.5f * (1.f + std::erf(x * kInverseSqrt2)); }

#if PALE_X86
// out = x Phi(x)
__attribute__((target("avx2,fma"))) void gelu_avx2(const float* x, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, normal_cdf_avx2(v)));
  }
  for (; i < n; ++i) out[i] = x[i] * normal_cdf(x[i]);
}

// d(x) = d(out) (Phi(x) + x phi(x)), phi the standard normal density
__attribute__((target("avx2,fma"))) void gelu_backward_avx2(const float* x, const float* grad,
                                                            float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 density = _mm256_mul_ps(
        _mm256_set1_ps(kInverseSqrt2Pi),
        exp_avx2(_mm256_mul_ps(_mm256_set1_ps(-0.5f), _mm256_mul_ps(v, v))));
    const __m256 slope = _mm256_fmadd_ps(v, density, normal_cdf_avx2(v));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(grad + i), slope));
  }
  for (; i < n; ++i) {
    const float density = kInverseSqrt2Pi * std::exp(-0.5f * x[i] * x[i]);
    out[i] = grad[i] * (normal_cdf(x[i]) + x[i] * density);
  }
}

#endif  // PALE_X86

void gelu_plain(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * normal_cdf(x[i]);
}

void gelu_backward_plain(const float* x, const float* grad, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float density = kInverseSqrt2Pi * std::exp(-0.5f * x[i] * x[i]);
    out[i] = grad[i] * (normal_cdf(x[i]) + x[i] * density);
  }
}

// fn(begin, count) over [0, n) in blocks of 4096 elements, the blocks in parallel
template <typename Function>
void in_blocks(int64_t n, Function fn) {
  constexpr int64_t kBlock = 4096;
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kBlock) fn(begin, std::min(kBlock, n - begin));
}

void check_gelu(const paddle::Tensor& x) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32,
           "pale gelu: float32 CPU tensors only");
}

}  // namespace

std::vector<paddle::Tensor> GeluForward(const paddle::Tensor& x) {
  check_gelu(x);
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  [[maybe_unused]] const bool avx2 = has_avx2();
  in_blocks(x.numel(), [&](int64_t begin, int64_t count) {
#if PALE_X86
    if (avx2) return gelu_avx2(xp + begin, op + begin, count);
#endif
    gelu_plain(xp + begin, op + begin, count);
  });
  return {out};
}

std::vector<paddle::Tensor> GeluBackward(const paddle::Tensor& x, const paddle::Tensor& grad) {
  check_gelu(x);
  PD_CHECK(grad.shape() == x.shape(), "pale gelu: the gradient's shape must be the input's");
  auto grad_x = paddle::empty(x.shape(), x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* gp = grad.data<float>();
  float* op = grad_x.data<float>();
  [[maybe_unused]] const bool avx2 = has_avx2();
  in_blocks(x.numel(), [&](int64_t begin, int64_t count) {
#if PALE_X86
    if (avx2) return gelu_backward_avx2(xp + begin, gp + begin, op + begin, count);
#endif
    gelu_backward_plain(xp + begin, gp + begin, op + begin, count);
  });
  return {grad_x};
}

namespace {

void check_layer_norm(const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& b) {
  PD_CHECK(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 && x.shape().size() == 2,
           "pale layer norm: float32 CPU rows [N, C] only");
  PD_CHECK(w.numel() == x.shape()[1] && b.numel() == x.shape()[1],
           "pale layer norm: weight and bias need C entries");
}

}  // namespace

// rows [N, C] -> (out, mean [N], 1 / sqrt(var + epsilon) [N])
std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& w,
                                             const paddle::Tensor& b, float epsilon) {
  check_layer_norm(x, w, b);
  const int64_t N = x.shape()[0], C = x.shape()[1];
  auto out = paddle::empty({N, C}, x.dtype(), x.place());
  auto mean = paddle::empty({N}, x.dtype(), x.place());
  auto rstd = paddle::empty({N}, x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  float* mp = mean.data<float>();
  float* rp = rstd.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < N; ++r) {
    const float* row = xp + r * C;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += row[c];
    const float m = sum / C;
    float squares = 0.f;
#pragma omp simd reduction(+ : squares)
    for (int64_t c = 0; c < C; ++c) squares += (row[c] - m) * (row[c] - m);
    const float inverse = 1.f / std::sqrt(squares / C + epsilon);
    float* o = op + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[c] = (row[c] - m) * inverse * wp[c] + bp[c];
    mp[r] = m;
    rp[r] = inverse;
  }
  return {out, mean, rstd};
}

// d(x) = rstd (g w - mean(g w) - xhat mean(g w xhat)), d(w) = sum g xhat, d(b) = sum g
std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& w,
                                              const paddle::Tensor& mean,
                                              const paddle::Tensor& rstd,
                                              const paddle::Tensor& grad) {
  PD_CHECK(grad.shape() == x.shape(), "pale layer norm: the gradient's shape must be x's");
  const int64_t N = x.shape()[0], C = x.shape()[1];
  auto grad_x = paddle::empty({N, C}, x.dtype(), x.place());
  auto grad_w = paddle::empty({C}, x.dtype(), x.place());
  auto grad_b = paddle::empty({C}, x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* wp = w.data<float>();
  const float* mp = mean.data<float>();
  const float* rp = rstd.data<float>();
  const float* gp = grad.data<float>();
  float* gxp = grad_x.data<float>();
  std::vector<double> total_w(static_cast<size_t>(C), 0.0), total_b(static_cast<size_t>(C), 0.0);
#pragma omp parallel
  {
    std::vector<float> sum_w(static_cast<size_t>(C), 0.f), sum_b(static_cast<size_t>(C), 0.f);
    std::vector<double> mine_w(static_cast<size_t>(C), 0.0), mine_b(static_cast<size_t>(C), 0.0);
    int64_t rows_in_sum = 0;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const float* row = xp + r * C;
      const float* g = gp + r * C;
      const float m = mp[r], inverse = rp[r];
      float mean_gw = 0.f, mean_gwx = 0.f;
#pragma omp simd reduction(+ : mean_gw, mean_gwx)
      for (int64_t c = 0; c < C; ++c) {
        const float gw = g[c] * wp[c];
        mean_gw += gw;
        mean_gwx += gw * (row[c] - m) * inverse;
      }
      mean_gw /= C;
      mean_gwx /= C;
      float* o = gxp + r * C;
      float* sw = sum_w.data();
      float* sb = sum_b.data();
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float normed = (row[c] - m) * inverse;
        o[c] = inverse * (g[c] * wp[c] - mean_gw - normed * mean_gwx);
        sw[c] += g[c] * normed;
        sb[c] += g[c];
      }
      if (++rows_in_sum == 64) {  // float partial sums of 64 rows, then double
        for (int64_t c = 0; c < C; ++c) {
          mine_w[c] += sum_w[c];
          mine_b[c] += sum_b[c];
          sum_w[c] = sum_b[c] = 0.f;
        }
        rows_in_sum = 0;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      mine_w[c] += sum_w[c];
      mine_b[c] += sum_b[c];
    }
#pragma omp critical
    for (int64_t c = 0; c < C; ++c) {
      total_w[c] += mine_w[c];
      total_b[c] += mine_b[c];
    }
  }
  float* gwp = grad_w.data<float>();
  float* gbp = grad_b.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    gwp[c] = static_cast<float>(total_w[c]);
    gbp[c] = static_cast<float>(total_b[c]);
  }
  return {grad_x, grad_w, grad_b};
}

PD_BUILD_OP(pale_layer_norm)
    .Inputs({"X", "Weight", "Bias"})
    .Outputs({"Out", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward));

PD_BUILD_OP(pale_layer_norm_backward)
    .Inputs({"X", "Weight", "Mean", "Rstd", "OutGrad"})
    .Outputs({"XGrad", "WeightGrad", "BiasGrad"})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

PD_BUILD_OP(pale_gelu).Inputs({"X"}).Outputs({"Out"}).SetKernelFn(PD_KERNEL(GeluForward));

PD_BUILD_OP(pale_gelu_backward)
    .Inputs({"X", "OutGrad"})
    .Outputs({"XGrad"})
    .SetKernelFn(PD_KERNEL(GeluBackward));

PD_BUILD_OP(pale_depthwise_conv3x3_channels_last)
    .Inputs({"X", "Filter"})
    .Outputs({"Out"})
    .Attrs({"ones: bool"})
    .SetKernelFn(PD_KERNEL(DepthwiseConvChannelsLast));

PD_BUILD_OP(pale_depthwise_conv3x3_channels_last_backward)
    .Inputs({"X", "Filter", "OutGrad"})
    .Outputs({"XGrad", "FilterGrad"})
    .Attrs({"ones: bool"})
    .SetKernelFn(PD_KERNEL(DepthwiseConvChannelsLastBackward));

PD_BUILD_OP(pale_softmax_)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetInplaceMap({{"X", "Out"}})
    .SetKernelFn(PD_KERNEL(SoftmaxInplace));

PD_BUILD_OP(pale_softmax)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(SoftmaxForward));

PD_BUILD_OP(pale_softmax_backward)
    .Inputs({"Out", "OutGrad"})
    .Outputs({"XGrad"})
    .SetKernelFn(PD_KERNEL(SoftmaxBackward));
