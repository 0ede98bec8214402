"""Reproducible experiment chains: each a list of ``relevance`` commands, resumable step by step."""
