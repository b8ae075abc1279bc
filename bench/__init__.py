"""Benchmarks of the receiver: `make bench` (python -m bench). See bench/README.md."""
