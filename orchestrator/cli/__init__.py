"""The command line: the parser, and the commands behind one lazy seam (`main.py`)."""
