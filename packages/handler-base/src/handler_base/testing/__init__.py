"""Helpers for testing code built on the platform: real local servers, started and stopped.

These start real processes (``nats-server``, a local Ray cluster, Milvus Lite in a
temporary folder); nothing here is a mock. The ``*_fixtures`` modules are pytest plugins.
"""
