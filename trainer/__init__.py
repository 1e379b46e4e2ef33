"""Offline trainer: simulated or user history, features, LightGBM, evaluation, ONNX bundle."""
