from safe_procurement.services.partner_registry.config import Settings
from safe_procurement.services.partner_registry.main import build_app
from safe_procurement.services.runner import serve

if __name__ == "__main__":
    serve(build_app, Settings())
