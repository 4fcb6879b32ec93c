"""Benchmarks. Each reports its figures as a ratio to raw ONNX Runtime measured in the same run."""
