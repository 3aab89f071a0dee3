"""INT8 calibration: calibration data, Q/DQ (explicit) quantization and the accuracy gate. Needs onnx and
onnxruntime, never torch.

    from hbci.calibration.gate import quantize_bundle, GateThresholds, GateFailed
    quantize_bundle("bundle/", "videos/calib/", "held_out.csv")   # adds int8/video_encoder.onnx, or raises

Modules: `data` (clips decoded and preprocessed exactly as the runtime does), `quantize` (onnxruntime
quantize_static in TensorRT's Q/DQ form, structure inspection, optional ModelOpt back end), `gate` (the accuracy
gate and the bundle update). Submodules are imported on use, so `import hbci.calibration` is free.
"""
