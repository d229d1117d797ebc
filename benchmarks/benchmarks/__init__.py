"""asv benchmarks of matfree (see benchmarks/README.md)."""
