"""Moved: `python -m training.optimize`."""

from classifiers.moved_command import exit_moved

if __name__ == "__main__":
    exit_moved("classifiers.optimize", "training.optimize")
