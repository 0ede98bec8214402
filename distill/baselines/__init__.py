"""Reference systems the students are compared with: BM25 and bundles scored through the service's code."""
