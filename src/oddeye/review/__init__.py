"""``oddeye review``: a local web page to look through what a run flagged, mark images normal or
anomalous, move and save the threshold, and add the images marked normal to the model."""
