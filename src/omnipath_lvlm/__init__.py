"""OmniPath: a pathology large vision-language model."""
__version__ = "0.1.0"
