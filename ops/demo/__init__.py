"""``python -m ops.demo`` (``make demo``): broker, training, two workers, a minute of load, a report, all stopped."""
