// torch binding of the C-ABI kernel in int6_matmul.cu: pgolf_cuda::int6_matmul_small_m.
// Built only where CUDA torch and nvcc exist (setup.py); pgolf/ops/int6_matmul.py calls it.
#include <ATen/cuda/CUDAContext.h>
#include <torch/extension.h>

extern "C" int pgolf_int6_matmul_small_m(const void* x, const uint8_t* w, const float* scale, void* y,
                                         int M, int N, int K, cudaStream_t stream);

static at::Tensor int6_matmul_small_m(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale,
                                      int64_t k) {
  TORCH_CHECK(x.is_cuda() && x.scalar_type() == at::kBFloat16 && x.dim() == 2 && x.size(1) == k && x.is_contiguous(),
              "x must be a contiguous CUDA bf16 [M, K] tensor");
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.size(1) == 3 * ((k + 3) / 4),
              "packed must be contiguous uint8 [N, 3*ceil(K/4)]");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == packed.size(0), "scale must be fp32 [N]");
  auto y = at::empty({x.size(0), packed.size(0)}, x.options());
  int err = pgolf_int6_matmul_small_m(x.data_ptr(), packed.data_ptr<uint8_t>(), scale.data_ptr<float>(),
                                      y.data_ptr(), (int)x.size(0), (int)packed.size(0), (int)k,
                                      at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == 0, "pgolf_int6_matmul_small_m failed with code ", err);
  return y;
}

TORCH_LIBRARY(pgolf_cuda, m) { m.def("int6_matmul_small_m(Tensor x, Tensor packed, Tensor scale, int k) -> Tensor"); }
TORCH_LIBRARY_IMPL(pgolf_cuda, CUDA, m) { m.impl("int6_matmul_small_m", &int6_matmul_small_m); }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
