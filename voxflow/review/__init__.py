"""Review: search the transcripts of an output folder and browse them in a browser (``voxflow serve``)."""
