"""Batch scoring behind `score.py`: resumable CSV output, parallel scoring, report and worklist."""
