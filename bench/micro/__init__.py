"""Microbenchmarks of the stream parser, the router and the serializer (pytest-benchmark)."""
