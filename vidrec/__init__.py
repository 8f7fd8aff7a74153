"""vidrec: video and time-series action recognition with exact streaming inference."""

__version__ = "0.1.0"
