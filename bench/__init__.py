"""Side-by-side benchmarks against the biomero library (run with bench/run, never by the tests)."""
