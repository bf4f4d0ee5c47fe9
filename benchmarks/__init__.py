"""dynopt benchmarks (`make bench`)."""
