"""Benchmarks of django-messenger (see benchmarks/README.md). Not part of the package."""
