"""A long fault run: python -m ops.chaos."""
