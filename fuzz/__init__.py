"""Fuzz targets (atheris): `make fuzz` runs them; the test suite runs each for a bounded time."""
