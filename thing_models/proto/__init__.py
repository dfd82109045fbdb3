"""Protobuf wire contract of the thing-model package; ``*_pb2`` modules are generated code.

Regenerate with ``python scripts/generate_protos.py`` after editing a ``.proto`` file.
"""
