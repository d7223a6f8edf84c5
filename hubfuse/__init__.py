"""hubfuse: verify transformers fusion mappings and publish them to Hugging Face Hub repos."""

__version__ = "0.1.0"
