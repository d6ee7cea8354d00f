"""`mnist-cnn app`: the web page where people draw or upload a digit and meet the champion."""
