"""gandiff: GANDiffFace as a framework."""
__version__ = "0.1.0"
