"""Export: torch models → ONNX model bundles (core/bundle.py) that the scoring service serves."""
