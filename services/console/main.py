"""Composition of the console (the module every service image imports: `safe_procurement.services.<name>.main`)."""

from safe_procurement.services.console.app import build_app

__all__ = ["build_app"]
