"""Layers: deterministic tar writing, compression, whiteouts, safe extraction."""
