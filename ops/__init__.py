"""Operations: the local Kafka broker, load generation, benchmarks, the demo."""
