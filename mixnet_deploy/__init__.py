"""mixnet-deploy: MixNet-S/M/L from PyTorch to verified ONNX (FP32/FP16/INT8), TensorRT and Triton."""

__version__ = "0.1.0"
