"""Export: torch models → ONNX model bundles (service/bundle.py) that the scoring service serves."""
