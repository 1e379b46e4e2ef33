"""Contracts shared by trainer and workers: messages, features, the model bundle."""
