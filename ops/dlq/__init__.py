"""Re-drive the dead-letter topic after a fix: ``python -m ops.dlq replay [--dry-run]``."""
