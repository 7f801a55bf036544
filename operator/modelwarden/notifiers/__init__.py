"""Notifiers: one Protocol (base.py), one channel per file, a factory and a no-op."""
