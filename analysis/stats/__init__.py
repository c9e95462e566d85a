"""Pure statistics (no Django): severity models and agreement between readers."""
