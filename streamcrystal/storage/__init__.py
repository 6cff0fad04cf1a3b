"""Storing and reading runs: ``catalog`` (embedded Tiled, or a URI), ``writeback`` (analysis runs
into it, results back, the server's writer chain), ``replay``, ``spool``, ``jsonl``."""
