// FNGD's weighted-sum phase for a block whose per-sample scales are known before the
// forward pass, as a C++ autograd function: no Python runs in its backward.
//
// Forward: the module's own op. Backward: the input gradient as autograd computes it, and
// the weight (and bias) gradient as the same GEMM or convolution with each sample's rows of
// the output gradient scaled by its entry of `scale`, an (N, 1) column: sum_i scale_i g_i.
// fngd/blocks/base.py (BlockFunction) is the Python form of the same computation; the two
// are tested equal. The weighted part is a profiler range named as fngd.phases names the
// phase (FNGD_WEIGHTED_SUM), so traces show it inside backward as they do for the Python
// blocks; the runner's phase timer, a Python object, does not see it (its time counts as
// backward).

#include <ATen/record_function.h>
#include <torch/extension.h>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// `scale` (N, 1) as (N, 1, ..., 1) in the dtype of `g` (a model cast after FNGD was built
// keeps its table's dtype), to scale each sample's slice of `g`.
Tensor rows(const Tensor& scale, const Tensor& g) {
  std::vector<int64_t> shape(g.dim(), 1);
  shape[0] = -1;
  return scale.to(g.scalar_type()).view(shape);
}

struct WeightedLinear : public torch::autograd::Function<WeightedLinear> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const c10::optional<Tensor>& bias, const Tensor& scale) {
    ctx->save_for_backward({x, weight, scale});
    return torch::linear(x, weight, bias);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& g = grads[0];
    Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0)) {
      grad_x = g.dim() == 2 ? g.mm(weight) : g.matmul(weight);
    }
    if (!ctx->needs_input_grad(1)) {  // e.g. autograd.grad of the input alone
      return {grad_x, grad_w, grad_b, Tensor()};
    }
    RECORD_USER_SCOPE("fngd/weighted_sum");
    Tensor d = g * rows(saved[2], g);
    if (g.dim() != 2) {
      d = d.reshape({-1, d.size(-1)});
    }
    grad_w = d.t().mm(x.dim() == 2 ? x : x.reshape({-1, x.size(-1)}));
    if (ctx->needs_input_grad(2)) {  // a bias that trains (a frozen one gets nothing)
      grad_b = d.sum(0);
    }
    return {grad_x, grad_w, grad_b, Tensor()};
  }
};

struct WeightedConv2d : public torch::autograd::Function<WeightedConv2d> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const c10::optional<Tensor>& bias, const Tensor& scale,
                        std::vector<int64_t> stride, std::vector<int64_t> padding,
                        std::vector<int64_t> dilation) {
    ctx->save_for_backward({x, weight, scale});
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    return torch::conv2d(x, weight, bias, stride, padding, dilation, 1);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& weight = saved[1];
    const Tensor& g = grads[0];
    const bool bias = ctx->needs_input_grad(2);  // a bias that trains
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    const std::vector<int64_t> no_padding{0, 0};
    Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      grad_x = std::get<0>(at::convolution_backward(
          g, x, weight, c10::nullopt, stride, padding, dilation, false, no_padding, 1,
          {true, false, false}));
    }
    if (!ctx->needs_input_grad(1)) {  // e.g. autograd.grad of the input alone
      return {grad_x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    RECORD_USER_SCOPE("fngd/weighted_sum");
    const Tensor d = g * rows(saved[2], g);
    c10::optional<at::IntArrayRef> bias_sizes = c10::nullopt;
    std::vector<int64_t> out_channels{weight.size(0)};
    if (bias) {
      bias_sizes = out_channels;
    }
    auto weighted = at::convolution_backward(d, x, weight, bias_sizes, stride, padding, dilation,
                                             false, no_padding, 1, {false, true, bias});
    return {grad_x, std::get<1>(weighted), bias ? std::get<2>(weighted) : Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor()};
  }
};

Tensor weighted_linear(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
                       const Tensor& scale) {
  return WeightedLinear::apply(x, weight, bias, scale);
}

Tensor weighted_conv2d(const Tensor& x, const Tensor& weight, const c10::optional<Tensor>& bias,
                       const Tensor& scale, std::vector<int64_t> stride,
                       std::vector<int64_t> padding, std::vector<int64_t> dilation) {
  return WeightedConv2d::apply(x, weight, bias, scale, stride, padding, dilation);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("weighted_linear", &weighted_linear, "FNGD weighted-sum linear block");
  m.def("weighted_conv2d", &weighted_conv2d, "FNGD weighted-sum conv2d block");
}
