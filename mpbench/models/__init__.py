"""mpbench's own model families: the multi-path networks under test."""
