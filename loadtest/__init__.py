"""Load testing and speed measurement (`relevance bench`, `relevance loadtest`; docs/BENCHMARKS.md).

workload.py   requests of the search-backend pattern (one query, N items) from the bundled real data
targets.py    how a request becomes an HTTP call on each server under test (service, Infinity)
runner.py     the async load generator: closed and open loop, bounded, warm-up, per-request outcomes
prom.py       /metrics parsing and histogram deltas          procstats.py  server peak RSS from /proc
servers.py    servers under test as loopback subprocesses    hf_cross.py   a cross student for Infinity
efficiency.py FLOPs per pair, matmul peak, the raw ONNX path compare.py     side-by-side ratios
report.py     JSON/Markdown pieces                           bench.py      the standard scenario
cli.py        the two commands                              explain_isolation.py  /score latency while /explain runs
gpu/          the one-shot GPU check (issue 15): payload carried in parts, dry run on CPU
"""
