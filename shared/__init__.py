"""The project's own shared code: wire contracts and the technical kit."""
