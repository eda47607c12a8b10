"""The model repository and its tools: manifest.json as typed entries, Keras file loading, import, export.

Apart from the runtime (classifiers.backends.base, batching, backends, pipeline): these read and write the
folder; the runtime serves what they describe.
"""
