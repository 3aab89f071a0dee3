"""INT8 calibration: calibration data, Q/DQ quantization and the accuracy gate. Needs onnx and onnxruntime."""
