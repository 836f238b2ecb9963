"""Composition of the console (the module every service image imports: `services.<name>.main`)."""

from services.console.app import build_app

__all__ = ["build_app"]
