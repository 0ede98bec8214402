"""One module per dataset file format; each exposes ``load(path, *, on_error, ...) -> LoadResult``."""
