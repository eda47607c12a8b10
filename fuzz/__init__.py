"""Fuzz targets (atheris): `make fuzz` runs them; the test suite runs each for a bounded time."""

# What atheris instruments for coverage: the decoding code and the libraries it decodes with. pydicom.data pulls
# in requests, urllib3, email and tqdm, which decode nothing; instrumenting them (and pydicom's dictionaries of
# tags and UIDs, data only) cost ~10 s of start-up per run.
INSTRUMENTED_PACKAGES = ("classifiers", "fuzz", "pydicom", "PIL", "pylibjpeg", "openjpeg", "libjpeg", "rle", "jpeg_ls")
NOT_INSTRUMENTED = ("pydicom._dicom_dict", "pydicom._private_dict", "pydicom._uid_dict")
