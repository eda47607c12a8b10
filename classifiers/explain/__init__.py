"""Heatmaps on request: CAM / Grad-CAM of the expert that scored, their peak and overlay."""
