"""Command-line interface: `tierlm serve|generate|bench|cache|make-tiny-model`."""
