"""Faust stream workers: decode, online features, micro-batched ONNX scoring, publish."""
