"""DICOM output: the results of a study as a Structured Report and secondary captures."""
