"""What a kernel file may name: the static gate's allowlist, kept as data (default deny).

Everything not listed here is rejected. A task extends it with `extra_imports` and
`extra_chains` in task.toml. The lists are decided from real kernels (the project's own,
SGLang's and FlashAttention's Triton kernels, Triton's tutorials), Hopper-era constructs
included (tensor descriptors and their allocator, tl.range with num_stages/warp_specialize,
autotune with key/prune_configs_by/hooks).
"""

from __future__ import annotations

IMPORTS = frozenset({"torch", "triton", "triton.language", "math", "typing", "functools", "__future__",
                     "triton.language.extra", "triton.language.extra.libdevice", "triton.language.extra.cuda",
                     "triton.language.extra.cuda.libdevice", "triton.language.extra.hip",
                     "triton.language.extra.hip.libdevice", "triton.language.math",
                     "triton.tools.tensor_descriptor"})

# ---- triton.language, inside @triton.jit functions
TL_FUNCTIONS = frozenset("""
PropagateNan TRITON_MAX_TENSOR_NUMEL abs add arange argmax argmin associative_scan assume atomic_add atomic_and
atomic_cas atomic_load atomic_max atomic_min atomic_or atomic_store atomic_xchg atomic_xor bfloat16 broadcast
broadcast_to cast cat cdiv ceil clamp condition const constexpr cos cumprod cumsum debug_barrier device_assert
div_rn dot dot_scaled dtype erf exp exp2 expand_dims fdiv flip float16 float32 float64 float8e4b15 float8e4b8
float8e4nv float8e5 float8e5b16 floor fma full gather histogram int1 int16 int32 int64 int8 interleave join load
load_tensor_descriptor log log2 make_block_ptr make_tensor_descriptor max max_constancy max_contiguous maximum min
minimum mul multiple_of num_programs permute philox program_id rand rand4x randint randint4x randn randn4x range
ravel reduce reduce_or reshape rsqrt sigmoid sin slice softmax sort split sqrt sqrt_rn squeeze static_assert
static_range store store_tensor_descriptor sub sum swizzle2d tensor tensor_descriptor topk trans uint16 uint32
uint64 uint8 umulhi unsqueeze view void where xor_sum zeros zeros_like advance
""".split())
TL_INLINE_ASM = "inline_asm_elementwise"
TL_MATH = frozenset("abs ceil cos div_rn erf exp exp2 fdiv floor fma log log2 rsqrt sin sqrt sqrt_rn umulhi".split())
LIBDEVICE = frozenset("""
abs acos acosh asin asinh atan atan2 atanh cbrt ceil copysign cos cosh cospi div_rd div_rn div_ru div_rz erf erfc
erfcinv erfcx erfinv exp exp10 exp2 expm1 fast_cosf fast_dividef fast_exp10f fast_expf fast_log10f fast_log2f
fast_logf fast_powf fast_sinf fast_tanf fast_tanhf fdim finitef floor fma fma_rd fma_rn fma_ru fma_rz fmod hypot
isfinited isinf isnan ldexp lgamma log log10 log1p log2 logb nearbyint nextafter pow rcp_rn rint round rsqrt
rsqrt_rn saturatef signbit sin sinh sinpi sqrt sqrt_rn tan tanh tgamma trunc add_rn mul_rn sub_rn float_as_int
int_as_float float_as_uint uint_as_float
""".split())
# Attributes and methods on values inside a jit function (tl tensors, pointers, constexprs,
# dtypes, tensor descriptors).
JIT_ATTRS = frozenset("""
T abs advance argmax argmin associative_scan broadcast_to cast cdiv ceil cos cumprod cumsum erf exp exp2
expand_dims flip floor gather histogram log log2 logical_and logical_or max min permute ravel reduce reduce_or
reshape rsqrt sigmoid sin softmax sort split sqrt sqrt_rn sum to trans view xor_sum dtype shape element_ty value
load store block_shape primitive_bitwidth is_floating is_int is_fp8 is_bf16 is_fp16 is_fp32 is_fp64 numel type
""".split())
JIT_BUILTINS = frozenset({"range", "len", "min", "max", "int", "float", "abs", "isinstance", "bool", "tuple"})

# ---- host code (the wrapper, grid functions, heuristics, autotune hooks)
TORCH_CHAINS = frozenset({
    "torch.empty", "torch.empty_like", "torch.zeros", "torch.zeros_like", "torch.empty_strided", "torch.full",
    "torch.full_like", "torch.ones",
    "torch.float16", "torch.bfloat16", "torch.float32", "torch.float64", "torch.int8", "torch.int16",
    "torch.int32", "torch.int64", "torch.uint8", "torch.bool", "torch.float8_e4m3fn", "torch.float8_e5m2",
    "torch.half", "torch.float", "torch.int", "torch.long", "torch.Tensor", "torch.dtype"})
TRITON_CHAINS = frozenset({"triton.jit", "triton.autotune", "triton.heuristics", "triton.Config", "triton.cdiv",
                           "triton.next_power_of_2", "triton.set_allocator", "triton.language",
                           "triton.tools.tensor_descriptor.TensorDescriptor",
                           "triton.tools.tensor_descriptor.TensorDescriptor.from_tensor"})
MATH_CHAINS = frozenset("math." + n for n in """
sqrt log log2 log10 exp exp2 ceil floor isqrt pi e inf nan isfinite isinf isnan fabs pow trunc gcd lcm prod
copysign tanh
""".split())
TYPING_NAMES = frozenset({"Optional", "Tuple", "List", "Dict", "Any", "Union", "Callable", "Sequence"})
DTYPE_NAMES = frozenset(c.split(".")[1] for c in TORCH_CHAINS) - {"Tensor", "dtype", "empty", "empty_like", "zeros",
                                                                   "zeros_like", "empty_strided", "full", "full_like",
                                                                   "ones"}
DECORATORS = frozenset({"triton.jit", "triton.autotune", "triton.heuristics"})
AUTOTUNE_KWARGS = frozenset({"configs", "key", "prune_configs_by", "reset_to_zero", "restore_value", "pre_hook",
                             "post_hook", "warmup", "rep"})
CONFIG_KWARGS = frozenset({"num_warps", "num_stages", "num_ctas", "maxnreg", "pre_hook"})
LAUNCH_KWARGS = frozenset({"num_warps", "num_stages", "num_ctas", "maxnreg"})

# Methods and attributes on host values that may be tensors: metadata, views, allocation.
# None of them reads a tensor's values.
TENSOR_VALUE_ATTRS = frozenset({"shape", "stride", "size", "dtype", "numel", "dim", "ndim", "element_size",
                                "is_contiguous", "is_floating_point", "itemsize"})
TENSOR_VIEW_ATTRS = frozenset({"view", "reshape", "flatten", "unsqueeze", "squeeze", "transpose", "permute",
                               "expand", "narrow", "unflatten", "contiguous", "T", "mT"})
TENSOR_ALLOC_ATTRS = frozenset({"new_empty", "new_zeros", "new_full"})
TENSOR_FILL_ATTRS = frozenset({"zero_", "fill_"})  # only on tensors the function allocated itself
# Methods and attributes on host values known not to be tensors (ints, strings, dicts and lists
# the file built, triton.Config objects, dtypes).
VALUE_ATTRS = frozenset({"items", "keys", "values", "get", "append", "extend", "join", "startswith", "endswith",
                         "lower", "upper", "kwargs", "num_warps", "num_stages", "num_ctas", "maxnreg",
                         "itemsize", "is_floating_point", "bit_length", "index", "count", "copy"})
MUTATING_VALUE_ATTRS = frozenset({"append", "extend"})  # only on containers the function built
HOST_BUILTINS = frozenset({"range", "len", "min", "max", "abs", "int", "float", "bool", "str", "tuple", "list",
                           "dict", "isinstance", "sorted", "any", "all", "sum", "enumerate", "zip", "round",
                           "divmod", "reversed", "set", "frozenset", "None", "True", "False"})
EXCEPTIONS = frozenset({"NotImplementedError", "ValueError", "TypeError", "RuntimeError", "AssertionError"})
