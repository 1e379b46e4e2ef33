"""The project's exceptions, one tree for every layer.

    FraudstreamError
    ├── ConfigError          a bad flag, setting or environment variable (fails at start)
    ├── BundleError          a model bundle that is missing, corrupt, unsigned or incompatible
    ├── DataQualityError     training files that fail the checks (trainer)
    ├── ExportError          ONNX export or parity failure (trainer)
    └── ScoringError         inference failed for a batch; ``retriable`` says whether to retry

Third-party errors (ONNX Runtime, Kafka clients) are translated where they are caught,
``raise ... from exc``, so that callers see one of these with a message that says what to fix.
"""

from __future__ import annotations


class FraudstreamError(Exception):
    retriable = False


class ConfigError(FraudstreamError):
    pass


class BundleError(FraudstreamError):
    pass


class DataQualityError(FraudstreamError, ValueError):
    pass


class ExportError(FraudstreamError):
    pass


class ScoringError(FraudstreamError):
    retriable = True
