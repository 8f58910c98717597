"""Speed and accuracy benchmarks (python -m benchmarks.<name>); results go to docs/benchmarks.md."""
