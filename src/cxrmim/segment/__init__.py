"""Lung segmentation for datasets without lung masks: a small U-Net, its training, post-processing and QC."""
