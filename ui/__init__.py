"""Streamlit helpers shared by the pages (the only place besides pages/ and app.py that imports streamlit).

Import order matters: aiortc (under streamlit-webrtc) must be imported before
TensorFlow. With TensorFlow 2.21 loaded first, importing pylibsrtp 1.0 (an
aiortc dependency) after av/cryptography crashes the process with a
segmentation fault (reproduced here: ``import tensorflow; import aiortc``).
Importing it first is harmless, so every page gets it through this package.
"""

import aiortc  # noqa: F401  (must come before tensorflow; see above)
