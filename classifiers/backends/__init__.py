"""Backends: the registry of named runners, the model base class, and each runtime's loader."""
