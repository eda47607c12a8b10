"""Moved: `python -m training.import_original`."""

from classifiers.moved_command import exit_moved

if __name__ == "__main__":
    exit_moved("classifiers.repository.legacy_import", "training.import_original")
