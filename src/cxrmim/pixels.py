"""The grey-level statistics every input is normalised with: the data stages apply them, encoder files record them."""

PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
