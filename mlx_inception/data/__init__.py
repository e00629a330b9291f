"""Image decoding, preprocessing and folders of labelled images."""
