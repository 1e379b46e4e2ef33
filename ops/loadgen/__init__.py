"""Replay transactions and their labels into Kafka, interleaved in event time."""
