"""``python -m ops.inferbench``: inference alone, no Kafka: rows/s per batch size of LightGBM's own
predict, ONNX Runtime's tree graph on the CPU, the tensorized graph on the CPU, and the tensorized
graph on CUDA with IO binding (when a GPU is present), and the batch size from which the tensor
graph beats the tree graph on each device (issue 8). Reports; never asserts speed.
"""
