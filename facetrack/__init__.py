"""FaceTrack: build your own face detector.

The library behind the app and the command line. It never imports streamlit.
Data flows one way: workspace -> data -> train -> run folder -> detect.
"""

__version__ = "0.1.0"
