"""Kafka clients side by side on this machine: the pass-through ceiling (consume -> produce the same
bytes -> acks -> commit) of aiokafka and confluent-kafka, with Kafka's own JVM perf tools as the
physical anchor (``python -m ops.clientbench``)."""
