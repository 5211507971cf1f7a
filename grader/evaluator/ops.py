"""The op tables of a captured graph (aten names, without overload), defined once: the evaluator
runs only ``RUNNABLE`` ops, and the architecture rule (static/rules/linear_layers.py) judges a graph
and the kernel's traced forward pass by them. Imports nothing: the static check loads it."""

from __future__ import annotations

# Ops that multiply by weights: wherever one appears (in the captured graph or in the kernel's
# traced forward pass), it is a product, counted and held to the Linear layers' shapes.
PRODUCTS = frozenset({"linear", "addmm", "mm", "matmul", "bmm", "baddbmm", "addbmm", "addmv", "mv"})
SHAPING = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "squeeze",
        "unsqueeze",
        "permute",
        "transpose",
        "t",
        "contiguous",
        "clone",
        "_to_copy",
        "to",
        "expand",
        "detach",
        "alias",
        "lift_fresh_copy",
        "numpy_T",
        "select",
        "slice",
        "sym_size",
        "_assert_tensor_metadata",
    }
)
# Normalization layers (their weights and statistics may sit beside the Linear layers).
NORMS = frozenset(
    {
        "batch_norm",
        "_native_batch_norm_legit_no_training",
        "_native_batch_norm_legit",
        "native_batch_norm",
        "layer_norm",
        "native_layer_norm",
        "group_norm",
        "native_group_norm",
        "instance_norm",
        "rms_norm",
    }
)
# The elementwise activations and arithmetic: each element from the same element of the operands.
ELEMENTWISE_LAYERS = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "gelu",
        "elu",
        "selu",
        "celu",
        "silu",
        "mish",
        "sigmoid",
        "tanh",
        "hardtanh",
        "hardtanh_",
        "hardswish",
        "hardsigmoid",
        "softplus",
        "log_sigmoid",
        "clamp",
        "clamp_min",
        "clamp_max",
        "threshold",
        "dropout",
        "add",
        "sub",
        "rsub",
        "mul",
        "div",
        "neg",
        "pow",
        "sqrt",
        "rsqrt",
        "exp",
        "log",
        "abs",
    }
)
# Ops that compute each element from the same element of their operands (and numbers), copies
# included. Two tensors of the image's way combined by one of them, both computed element by
# element from the same tensor, make a function of each value (x / (1 + |x|) is nn.Softsign,
# x * sigmoid(x) a SiLU by hand), never a mix of values (flow.py).
POINTWISE = ELEMENTWISE_LAYERS | frozenset(
    {"clone", "contiguous", "detach", "alias", "_to_copy", "to"}
)
LAYERS = (
    NORMS
    | ELEMENTWISE_LAYERS
    | frozenset(
        {
            "prelu",
            "_prelu_kernel",
            "rrelu",
            "log_sigmoid_forward",
            "softmax",
            "_softmax",
            "log_softmax",
            "_log_softmax",
            "native_dropout",
            "feature_dropout",
            "alpha_dropout",
            "feature_alpha_dropout",
            "mean",
            "sum",
            "var",
            "avg_pool1d",
            "avg_pool2d",
            "getitem",
        }
    )
)
# A convolutional template's own ops (nn.Conv1d/Conv2d and pooling, as torch.export and the
# kernel's dispatch name them): the architecture rule counts a convolution as a product of a
# template's conv layer, and a pooling op as part of its chain, only for a template that has conv
# layers (static/rules/linear_graph.py); for one of Linear layers only (HW3) either is an op no
# layer of the homework computes. The evaluator runs them (its width bound, flow.py, holds what a
# convolution may make of an image).
CONVOLUTIONS = frozenset({"conv1d", "conv2d", "convolution", "_convolution"})
POOLING = frozenset(
    {
        "max_pool1d",
        "max_pool2d",
        "max_pool1d_with_indices",
        "max_pool2d_with_indices",
        "avg_pool1d",
        "avg_pool2d",
        "adaptive_avg_pool1d",
        "adaptive_avg_pool2d",
        "_adaptive_avg_pool2d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "avg_pool3d",  # nn.LocalResponseNorm's sum over neighbouring channels
    }
)
# Padding the image's way before a convolution (nn.Conv2d's padding_mode, nn.ZeroPad2d): the
# evaluator records the amounts beside the convolution it feeds.
PADDING = frozenset(
    {
        "pad",
        "constant_pad_nd",
        "reflection_pad1d",
        "reflection_pad2d",
        "replication_pad1d",
        "replication_pad2d",
        "_pad_circular",
    }
)
# The only ops the evaluator runs at all (sanitize.py refuses a graph with any other): no op that
# reads or writes files, allocates or mutates.
RUNNABLE = PRODUCTS | SHAPING | LAYERS | CONVOLUTIONS | POOLING | PADDING
# Values per image the image's way may hold before the evaluator runs a graph at all (flow.py), in
# images' worth without the grader's bound (HW3's) or in widths of the template's widest layer
# (static/layers.py ``widest_way``, the bound the grader passes).
WIDEST = 4
# The ops the evaluator records as products, each with the weight it applies (flow.py): the
# matrix products and the convolutions (the rule judges each by the template's layers).
WEIGHTED = PRODUCTS | CONVOLUTIONS

# Ops that only reshape, copy or move a tensor: a weight seen through them is still that weight.
PASS_THROUGH = frozenset(
    {
        "view",
        "reshape",
        "_unsafe_view",
        "t",
        "permute",
        "transpose",
        "contiguous",
        "clone",
        "_to_copy",
        "to",
        "detach",
        "alias",
        "lift_fresh_copy",
        "expand",
        "unsqueeze",
        "squeeze",
    }
)
# Ops that read a shape, never the image's data.
SIZES = frozenset({"sym_size", "sym_numel", "sym_stride", "sym_storage_offset"})
