"""Helpers of the transforms (templates, taxonomies, document sources): no transform is registered here."""
