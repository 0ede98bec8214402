"""The /explain slow path: teacher explanations on demand, cached in Redis, behind API keys."""
