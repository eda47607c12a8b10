"""Moved: `python -m training.export_onnx`."""

from classifiers.moved_command import exit_moved

if __name__ == "__main__":
    exit_moved("classifiers.repository.onnx_export", "training.export_onnx")
