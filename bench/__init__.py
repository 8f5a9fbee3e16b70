"""Benchmarks: an XMPP load generator (``python -m bench.loadgen``), the suite behind ``make bench``
(``python -m bench.suite``) and drivers for the servers under test."""
