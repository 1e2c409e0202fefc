"""dsdeploy: run DeepSeek models on your own GPUs, with a local-first router and a cloud fallback."""

__version__ = "0.1.0"
