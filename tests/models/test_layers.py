"""The depth-wise convolution with its own backward (the default on CUDA, forced here) against
``F.conv2d``'s autograd."""

import pytest
import torch
import torch.nn.functional as F

from msvmunet.models import layers


def depthwise_conv_nhwc(x, weight, bias=None):
    return layers.depthwise_conv_nhwc(x, weight, bias, flipped_dgrad=True)


def reference(x, weight, bias):
    y = F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])
    return y.permute(0, 2, 3, 1)


def grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_(True) if t is not None else None for t in inputs]
    y = fn(*inputs)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
    return [y.detach()] + [t.grad for t in inputs if t is not None]


@pytest.mark.parametrize("kernel,with_bias", [(3, True), (5, False), (1, True)], ids=["3x3-bias", "5x5", "1x1-bias"])
def test_depthwise_conv_matches_conv2d_float64(kernel, with_bias):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)  # channel-last, non-square
    weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)  # not symmetric: a missing flip shows
    bias = torch.randn(6, dtype=torch.float64) if with_bias else None
    ours, expected = grads(depthwise_conv_nhwc, x, weight, bias), grads(reference, x, weight, bias)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), ours, expected):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_depthwise_conv_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(depthwise_conv_nhwc, (x, weight, bias))


def test_depthwise_conv_under_autocast():
    # operands cast to autocast's dtype as autocast casts F.conv2d's: same values and dtypes of output and gradients
    torch.manual_seed(2)
    x, weight, bias = torch.randn(2, 6, 5, 8), torch.randn(8, 1, 3, 3), torch.randn(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = grads(depthwise_conv_nhwc, x, weight, bias)
        expected = grads(reference, x, weight, bias)
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), ours, expected):
        assert a.dtype == b.dtype, name
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2, msg=name)


def test_depthwise_conv_only_needed_gradients():
    x = torch.randn(1, 4, 4, 3, requires_grad=True)
    weight, bias = torch.randn(3, 1, 3, 3), torch.randn(3)  # frozen kernel and bias
    depthwise_conv_nhwc(x, weight, bias).sum().backward()
    assert x.grad is not None and weight.grad is None and bias.grad is None


@pytest.mark.parametrize("shape", [(4, 1, 2, 2), (4, 2, 3, 3), (5, 1, 3, 3)], ids=["even", "grouped", "channels"])
def test_depthwise_conv_rejects_other_kernels(shape):
    for flipped in (True, False):
        with pytest.raises(ValueError, match="depthwise_conv_nhwc"):
            layers.depthwise_conv_nhwc(torch.randn(1, 4, 4, 4), torch.randn(*shape), flipped_dgrad=flipped)


def test_depthwise_conv_plain_path():
    # the default off CUDA: F.conv2d itself
    torch.manual_seed(4)
    x, weight, bias = torch.randn(2, 5, 6, 4), torch.randn(4, 1, 5, 5), torch.randn(4)
    torch.testing.assert_close(layers.depthwise_conv_nhwc(x, weight, bias), reference(x, weight, bias))


def test_depthwise_conv_compiles_without_graph_breaks():
    torch.manual_seed(3)
    x, weight, bias = torch.randn(2, 5, 6, 4), torch.randn(4, 1, 3, 3, requires_grad=True), torch.randn(4)

    def f(x, weight, bias):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return depthwise_conv_nhwc(x, weight, bias).float().square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    expected = f(x, weight, bias)
    (eager_grad,) = torch.autograd.grad(expected, weight)
    got = compiled(x, weight, bias)
    (compiled_grad,) = torch.autograd.grad(got, weight)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(compiled_grad, eager_grad)
