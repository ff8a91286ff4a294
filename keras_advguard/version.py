"""Version of keras_advguard."""

__version__ = "0.1.0"
