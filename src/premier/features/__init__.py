"""Premier's features: one module (or folder) per feature, each a class that serves the decorators and
the gateway alike."""
