"""PACS integration: a worker that triages every new radiograph study of an Orthanc and stores the SR back."""
