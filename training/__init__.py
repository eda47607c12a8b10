"""Training: synthetic radiographs, MURA-layout data, model training and export."""
