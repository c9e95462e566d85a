"""The pipeline's version: bump it when a change alters any measurement."""

PIPELINE_VERSION = "0.8.0"
