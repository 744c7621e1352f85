"""Tools around the library: the command line, inspection and benchmarks.

Nothing here is imported by ``import vlm_collate``.
"""
