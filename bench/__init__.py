"""hcp-etcd benchmarks (``make bench``): each figure against a baseline measured in the same run.

See ``BENCHMARKS.md`` for the figures, the targets of issue 7 and the recorded results.
"""
