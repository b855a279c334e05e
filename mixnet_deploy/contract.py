"""The graph contract every stage shares: tensor names, the ``mixnet.*`` metadata keys, file suffixes, and the two
string helpers built on them. It imports nothing of the package, so any module may import it for a constant without
pulling a stage (torch, onnx, TensorRT) up with it."""

from __future__ import annotations

from collections.abc import Iterable

# ---------------------------------------------------------------- tensor names of every exported graph
INPUT_NAME = "input"  # float32 [batch, 3, H, W], normalised (--input-format float32-nchw)
IMAGE_NAME = "image"  # uint8 [batch, H, W, 3] RGB pixels (--input-format uint8-nhwc; graph_io.py)
OUTPUT_NAME = "logits"
SCORES_NAME = "scores"  # --top-k K: softmax probabilities float32 [batch, K], highest first
CLASSES_NAME = "classes"  # --top-k K: their class indices int32 [batch, K]
ENCODED_NAME = "encoded"  # mixnet-serve --encoded: an image file's bytes, Triton BYTES [batch, 1] (no graph tensor)

# ---------------------------------------------------------------- ONNX metadata_props keys (onnx_export.build_metadata)
META_PREFIX = "mixnet."
META_VARIANT = "mixnet.variant"
META_MODEL = "mixnet.model"  # timm's name; tf_* pad TensorFlow-style (static pads for input_size)
META_PADDING = "mixnet.padding"
META_PRECISION = "mixnet.precision"
META_INPUT_SIZE = "mixnet.input_size"
META_NUM_CLASSES = "mixnet.num_classes"
META_MEAN = "mixnet.mean"
META_STD = "mixnet.std"
META_INTERPOLATION = "mixnet.interpolation"
META_CROP_PCT = "mixnet.crop_pct"
META_MDCONV = "mixnet.mdconv"
META_BN_FOLDED = "mixnet.bn_folded"
META_WEIGHTS_SHA256 = "mixnet.weights_sha256"
META_WEIGHTS_LAYOUT = "mixnet.weights_layout"
META_INPUT_FORMAT = "mixnet.input_format"  # absent: float32-nchw (files written before issue 22)
META_TOP_K = "mixnet.top_k"  # absent or "0": logits only
META_CLASS_NAMES = "mixnet.class_names"  # --class-names: one name per line; absent: ImageNet-1k's for 1000 classes
META_BATCH_PROFILE = "mixnet.batch_profile"  # Triton config parameters only (not in the ONNX file)

# ---------------------------------------------------------------- values the graph and the report record
MIN_OPSET = 17  # the oldest opset our graphs are exported at (TensorRT 10's parser reads 9-20)
MDCONV_CHOICES = ("split", "merged")  # mixnet.mdconv: how a MixConv reaches the graph (lowering.py)
MDCONV_AUTO = "auto"  # --mdconv auto: the faster of MDCONV_CHOICES on the file's runtime (lowering_choice.py)
CALIB_METHODS = ("entropy", "percentile", "minmax")  # INT8 calibration (precision_onnx.py), in the cache key
DEFAULT_CALIB_METHOD = "percentile"  # chosen by measurement (docs/precision.md, benchmarks/precision_accuracy.py)
DEFAULT_CALIB_COUNT = 64
FLOAT_INPUT = "float32-nchw"
PIXEL_INPUT = "uint8-nhwc"
INPUT_FORMATS = (FLOAT_INPUT, PIXEL_INPUT)  # mixnet.input_format: what the graph input takes (graph_io.py)
MAX_TOP_K = 3839  # TensorRT's TopK: K < 3840 (onnx-tensorrt docs/operators.md)
# INT8 fixes, measured on the trained fixture and random S/M/L (docs/precision.md, benchmarks/int8_acceptance.py):
DEFAULT_EQUALIZE = True  # min cosine and top-1 agreement up on trained S and random M, exact in FP32
DEFAULT_BIAS_CORRECTION = False  # no consistent gain: top-1 within one image, min cosine down (trained S)
REFUSED_TAG = ".refused"  # --keep-refused: mixnet_s.int8.onnx -> mixnet_s.int8.refused.onnx

# ---------------------------------------------------------------- file suffixes
ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIXES = (".engine", ".plan")  # engine files: what make_runner, parity, bench and Triton take
MANIFEST_SUFFIX = ".json"  # appended to an engine's name: mixnet_s.fp16.engine.json
REPORT_SUFFIX = ".report.json"  # DIR/<model>.report.json
FAILED_SUFFIX = ".failed.json"  # DIR/<model>.failed.json: the report of a run that failed verification
MODEL_SUFFIXES = (ONNX_SUFFIX, *ENGINE_SUFFIXES)  # what parity and bench accept as a model file


def onnx_stem(name: str) -> str:
    """``mixnet_s.fp16.onnx`` -> ``mixnet_s.fp16``; a name without ``.onnx`` is returned as it is."""
    return name.removesuffix(ONNX_SUFFIX)


def input_name(input_format: str) -> str:
    """The graph input's name for an input format."""
    return IMAGE_NAME if input_format == PIXEL_INPUT else INPUT_NAME


def input_shape(input_format: str, batch: int, img_size: int) -> tuple[int, int, int, int]:
    """``[batch, 3, H, W]`` (float32-nchw) or ``[batch, H, W, 3]`` (uint8-nhwc)."""
    if input_format == PIXEL_INPUT:
        return (batch, img_size, img_size, 3)
    return (batch, 3, img_size, img_size)


def input_format_of(metadata) -> str:
    """The input format a model's ``mixnet.*`` metadata records (files without the key take float32-nchw)."""
    return metadata.get(META_INPUT_FORMAT) or FLOAT_INPUT


def shape_string(shape: Iterable[int], name: str = INPUT_NAME) -> str:
    """(8, 3, 224, 224) -> ``input:8x3x224x224`` (trtexec's and the TensorRT providers' shape syntax)."""
    return f"{name}:{'x'.join(str(int(d)) for d in shape)}"
