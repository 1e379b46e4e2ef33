"""Containers: the image's install script and lock files, the topic-init job, the health probe.

- ``install.sh`` — the image's one install command (the Dockerfile and ``tests/test_image.py`` run it)
- ``requirements.lock``, ``requirements-gpu.lock`` — pinned, hashed packages; ``python -m ops.docker.lock``
- ``python -m ops.docker.init_topics`` — create the worker's topics (compose's ``topic-init`` job)
- ``python -m ops.docker.healthcheck`` — probe a worker's ``/healthz`` (compose's healthcheck)
"""
