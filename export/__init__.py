"""Export a trained HBCI model into three ONNX graphs, a model bundle and TensorRT engines."""
