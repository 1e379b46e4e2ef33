"""A year through one worker: state sizes and RSS against simulated time (``python -m ops.soak``)."""
