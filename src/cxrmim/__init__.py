"""cxrmim: masked image modeling (MAE, region-guided RGMIM) for chest X-rays."""

__version__ = "0.1.0"
