"""In-situ quantization (ISQ, as mistral.rs calls it): a model quantized in memory while it loads, each tensor
read, quantized with the same kernels and per-tensor policy as mistral quantize (policy.py), and its float copy
dropped before the next is read. Peak memory is the quantized model plus one tensor in float32, never the
whole model in float32. Decode then runs on the quantized kernels, as from a GGUF of that type."""

from collections.abc import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from mistralcli.quant_tensor import DENSE_DTYPES, QuantTensor
from mistralcli.quantize import policy
from mistralcli.quantize.blocks import quantize
from mistralcli.quantize.policy import Mix, TensorPlan

Q = GGMLQuantizationType


class InSitu:
    """The plan for a model's tensors (names, shapes, source types, known before any is read), and the
    transform that quantizes each as it is read: `tensor = isq(tensor)`."""

    def __init__(self, mix: Mix, tensors: list[tuple[str, tuple, Q]], model: policy.ModelShape, progress=None):
        self.plans = {p.name: p for p in policy.plan(tensors, mix, model, policy.Options())}
        self.progress: Callable[[TensorPlan, int, int], None] | None = progress  # (plan, done, total)
        self.done = 0

    def __call__(self, tensor: QuantTensor) -> QuantTensor:
        plan = self.plans.get(tensor.name)
        if plan is None or plan.target == plan.source or plan.target == Q.F32:
            out = tensor
        else:
            out = quantized(tensor, plan.target)
        if plan is not None:
            self.done += 1
            if self.progress is not None:
                self.progress(plan, self.done, len(self.plans))
        return out


def quantized(tensor: QuantTensor, target: Q) -> QuantTensor:
    """tensor as `target`: its rows of blocks, the layout a GGUF of that type gives the engine."""
    shape = tuple(tensor.shape)
    x = tensor.dequantize().reshape(shape)
    data = quantize(x, target)
    if target in DENSE_DTYPES:
        data = data.view(DENSE_DTYPES[target]).reshape(shape)
    else:
        block, size = GGML_QUANT_SIZES[target]
        data = data.reshape(*shape[:-1], shape[-1] // block * size)
    return QuantTensor(tensor.name, target, shape, np.ascontiguousarray(data))
